"""The artifact store: model files, job arrays and results in a directory shared with the workers.

Layout under ``FPF_DATA_DIR``: ``models/<sha256>``, ``jobs/<id>/arrays.npz``,
``jobs/<id>/result.npz``. Every file is written to a temporary name in the same
directory and renamed into place, so a reader never sees a partial file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

_CHUNK = 1 << 20

#: Name prefix of a file being written, before it is renamed into place.
STAGED_PREFIX = ".staged-"


class ArtifactStore:
    """Files of models and jobs under one root directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        (self.root / "models").mkdir(parents=True, exist_ok=True)
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)

    # --- paths --------------------------------------------------------------------------
    def model_path(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    def job_dir(self, job_id: str) -> Path:
        return self.root / "jobs" / job_id

    def arrays_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "arrays.npz"

    def result_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "result.npz"

    def job_dirs(self) -> list[Path]:
        """Every job directory present (each named by its job id)."""
        return [p for p in (self.root / "jobs").iterdir() if p.is_dir()]

    def staged_files(self) -> list[Path]:
        """Temporary files of writes in progress, or of writers killed before they renamed them into place."""
        return [*(self.root / "models").glob(f"{STAGED_PREFIX}*"), *(self.root / "jobs").glob(f"*/{STAGED_PREFIX}*")]

    # --- writing ------------------------------------------------------------------------
    def put_model(self, source: BinaryIO) -> tuple[str, int]:
        """Copy a model file in, named by the sha256 of its bytes; returns (sha256, size)."""
        digest = hashlib.sha256()
        size = 0
        with _staged(self.root / "models") as (out, temp):
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            out.close()
            model_id = digest.hexdigest()
            os.replace(temp, self.model_path(model_id))
        return model_id, size

    @contextmanager
    def atomic_write(self, path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
        """Open a temporary file next to ``path``; on success it is renamed to ``path``."""
        path = Path(path)
        with _staged(path.parent) as (out, temp):
            yield out
            out.close()
            os.replace(temp, path)

    # --- removing -----------------------------------------------------------------------
    def delete_model(self, model_id: str) -> None:
        self.model_path(model_id).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)


@contextmanager
def _staged(directory: Path) -> Iterator[tuple[IO[bytes], Path]]:
    """A new temporary file in ``directory``, removed unless the caller renamed it away."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=directory, prefix=STAGED_PREFIX)
    temp = Path(name)
    out = os.fdopen(fd, "wb")
    try:
        yield out, temp
    finally:
        out.close()
        temp.unlink(missing_ok=True)
