"""Safe extraction of uploaded ``.zip`` / ``.tar.gz`` archives (SavedModel directories, ONNX with data).

An upload is untrusted: a member may try to escape the destination (an absolute
path, ``..``, a symbolic or hard link), or the archive may be a bomb that expands to
far more than it weighs. Every member is checked before a byte of it is written,
and the bytes actually written are counted, since declared sizes can lie.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Literal

from fpf_client.errors import InvalidModel

ArchiveKind = Literal["zip", "tar"]

MAX_MEMBERS = 10_000
MAX_TOTAL_BYTES = 4 << 30
MAX_RATIO = 200.0
_CHUNK = 1 << 20


def archive_kind(path: str | Path) -> ArchiveKind | None:
    """``"zip"`` or ``"tar"`` (plain, gzip, bzip2 or xz) from the file's bytes; None otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        with tarfile.open(path, "r:*") as archive:
            archive.next()
    except (tarfile.TarError, OSError, EOFError):
        return None
    return "tar"


def list_members(path: str | Path) -> list[str]:
    """The names of the regular files in an archive, without extracting (for format detection)."""
    path = Path(path)
    if archive_kind(path) == "zip":
        with zipfile.ZipFile(path) as archive:
            return [info.filename for info in archive.infolist() if not info.is_dir()]
    with tarfile.open(path, "r|*") as archive:
        return [member.name for member in archive if member.isfile()]


def extract_archive(
    path: str | Path,
    dest: str | Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_ratio: float = MAX_RATIO,
) -> Path:
    """Extract ``path`` into the new or empty directory ``dest``, refusing anything unsafe.

    Parameters
    ----------
    path : path of a zip or tar (optionally gzip/bzip2/xz-compressed) archive.
    dest : directory to extract into; created when missing, must be empty.
    max_members : most members (files and directories) accepted.
    max_total_bytes : most bytes written in all.
    max_ratio : most bytes written per byte of archive (a compression bomb exceeds it).

    Returns
    -------
    Path
        ``dest``.

    Raises
    ------
    InvalidModel
        Not an archive, or a member with an absolute path, ``..``, a link or a special
        file, a duplicate name, or too many members or bytes. ``dest`` is removed then.
    """
    path, dest = Path(path), Path(dest)
    kind = archive_kind(path)
    if kind is None:
        raise InvalidModel(f"{path.name} is not a zip or tar archive")
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise ValueError(f"extraction directory {dest} is not empty")
    limit = int(min(max_total_bytes, max_ratio * max(path.stat().st_size, 1)))
    writer = _Writer(dest.resolve(), max_members=max_members, limit=limit)
    try:
        members = _zip_members(path) if kind == "zip" else _tar_members(path)
        for name, is_dir, stream in members:
            writer.add(name, is_dir, stream)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


class _Writer:
    """Writes checked members under ``root``, counting members and bytes."""

    def __init__(self, root: Path, *, max_members: int, limit: int) -> None:
        self.root = root
        self.max_members = max_members
        self.limit = limit
        self.n_bytes = 0
        self.seen: set[str] = set()

    def add(self, name: str, is_dir: bool, stream: IO[bytes] | None) -> None:
        parts = _safe_parts(name)
        if not parts:
            return
        key = "/".join(parts)
        if key in self.seen:
            raise InvalidModel(f"archive member {name!r} appears twice")
        self.seen.add(key)
        if len(self.seen) > self.max_members:
            raise InvalidModel(f"archive has more than {self.max_members} members")
        target = self.root.joinpath(*parts)
        if not target.resolve().is_relative_to(self.root):
            raise InvalidModel(f"archive member {name!r} would be written outside the upload")
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "xb") as out:
            while chunk := stream.read(_CHUNK):
                self.n_bytes += len(chunk)
                if self.n_bytes > self.limit:
                    raise InvalidModel(
                        f"archive expands to more than {self.limit} bytes (a compression bomb, or too large)"
                    )
                out.write(chunk)


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name; refuses absolute paths and ``..``."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise InvalidModel(f"archive member {name!r} has an absolute path")
    parts = tuple(p for p in PurePosixPath(posix).parts if p not in ("", "."))
    if ".." in parts:
        raise InvalidModel(f"archive member {name!r} points outside the archive ('..')")
    return parts


def _zip_members(path: Path) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidModel(f"archive member {info.filename!r} is a symbolic link")
            if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InvalidModel(f"archive member {info.filename!r} is not a regular file or directory")
            if info.is_dir():
                yield info.filename, True, None
            else:
                with archive.open(info) as stream:
                    yield info.filename, False, stream


def _tar_members(path: Path) -> Iterator[tuple[str, bool, IO[bytes] | None]]:
    # Stream mode reads each member once, in order: nothing is decompressed ahead of the checks.
    with tarfile.open(path, "r|*") as archive:
        for member in archive:
            if member.issym() or member.islnk():
                raise InvalidModel(f"archive member {member.name!r} is a link")
            if member.isdir():
                yield member.name, True, None
            elif member.isfile():
                yield member.name, False, archive.extractfile(member)
            else:
                raise InvalidModel(f"archive member {member.name!r} is not a regular file or directory")


__all__ = ["MAX_MEMBERS", "MAX_RATIO", "MAX_TOTAL_BYTES", "archive_kind", "extract_archive", "list_members"]
