"""Turn what a user hands the client into what the service accepts, checking it locally first.

Arrays travel as ``.npz`` (never pickles), options are validated with :class:`FinderOptions`
so that a typo fails before the network, and a torch module is scripted to TorchScript.
torch is never imported here: a tensor or module can only exist if the user imported torch.
"""

from __future__ import annotations

import gzip
import io
import json
import sys
import tarfile
from dataclasses import asdict, dataclass
from os import PathLike, fspath
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from .errors import InvalidArray, InvalidModel, InvalidOptions, NonFinite, ShapeMismatch
from .options import FinderOptions
from .records import Model

NPZ_MEDIA_TYPE = "application/x-npz"


@dataclass(frozen=True)
class ModelFile:
    """A model's bytes and the file name it is uploaded under."""

    filename: str
    content: bytes


@dataclass(frozen=True)
class UploadHints:
    """What an upload says about its model besides the bytes (docs/api.md, docs/model-contract.md)."""

    format: str | None = None
    n_states: int | None = None
    n_inputs: int | None = None
    dynamics: str | None = None
    signature: str | None = None
    input_name: str | None = None
    state_name: str | None = None
    output_name: str | None = None

    def given(self) -> dict[str, Any]:
        """The fields that were set."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def options_payload(options: dict[str, Any]) -> dict[str, Any]:
    """Validate job options and return the ones the user set, JSON-ready.

    Raises
    ------
    InvalidOptions
        For an unknown option, a wrong type or an inconsistent combination.
    """
    try:
        validated = FinderOptions(**options)
    except ValidationError as exc:
        raise InvalidOptions("; ".join(_describe(error) for error in exc.errors())) from None
    return validated.model_dump(mode="json", exclude_unset=True)


def _describe(error: Any) -> str:
    name = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown option {name!r}"
    return f"{name}: {error['msg']}" if name else error["msg"]


def as_state_array(value: Any, name: str) -> np.ndarray:
    """A (rows, columns) float array from numpy, a list or a (CPU or GPU) torch tensor.

    A single vector is taken as one row; integer arrays become float64.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        array = array.astype(np.float64)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    elif array.dtype.kind != "f":
        raise InvalidArray(f"{name} must hold real numbers, not {array.dtype}")
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ShapeMismatch(f"{name} must be 2-D (rows, columns), got shape {array.shape}")
    n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if n_bad:
        raise NonFinite(f"{name} has {n_bad} non-finite value{'s' if n_bad != 1 else ''} (NaN or inf)")
    return array


@dataclass(frozen=True)
class ArraysPayload:
    """A job's checked arrays (``initial_states`` and, when given, ``inputs``) and the shapes they hold
    (hints for a model uploaded with them)."""

    arrays: dict[str, np.ndarray]
    n_states: int
    n_inputs: int | None

    @property
    def npz(self) -> bytes:
        """The arrays as an ``.npz`` file, the REST upload format."""
        buffer = io.BytesIO()
        arrays: dict[str, Any] = self.arrays
        np.savez(buffer, **arrays)
        return buffer.getvalue()


def arrays_payload(initial_states: Any, inputs: Any = None, cond_ids: Any = None) -> ArraysPayload:
    """Check ``initial_states: (n, n_states)``, ``inputs: (1 | n, n_inputs)`` and ``cond_ids: (n,)``."""
    arrays = {"initial_states": as_state_array(initial_states, "initial_states")}
    n, n_states = arrays["initial_states"].shape
    if n == 0:
        raise ShapeMismatch("initial_states has no rows")
    if inputs is not None:
        arrays["inputs"] = as_state_array(inputs, "inputs")
        if arrays["inputs"].shape[0] not in (1, n):
            raise ShapeMismatch(
                f"inputs has {arrays['inputs'].shape[0]} rows; expected 1 or {n} (one per initial state)"
            )
    if cond_ids is not None:
        arrays["cond_ids"] = as_cond_ids(cond_ids, n)
    return ArraysPayload(arrays, n_states, arrays["inputs"].shape[1] if inputs is not None else None)


def as_cond_ids(value: Any, n: int) -> np.ndarray:
    """One integer label per initial state, as int64 ``(n,)``."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        value = value.detach().cpu().numpy()
    labels = np.asarray(value)
    if labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.round(labels)).all():
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iub":
        raise InvalidArray(f"cond_ids must hold integers, not {labels.dtype}")
    labels = labels.reshape(-1).astype(np.int64)
    if labels.shape[0] != n:
        raise ShapeMismatch(f"cond_ids has {labels.shape[0]} entries; expected one per initial state ({n})")
    return labels


def is_local_model(model: Any) -> bool:
    """Whether ``model`` must be uploaded (a path or a torch module) rather than named by id."""
    if isinstance(model, PathLike):
        return True
    if isinstance(model, str):
        return Path(model).is_file()
    module_type = _torch_module_type()
    return module_type is not None and isinstance(model, module_type)


def model_id(model: object) -> str:
    """The id of a :class:`Model` record, or the id string ``model`` is."""
    return model.id if isinstance(model, Model) else str(model)


def model_file(model: str | PathLike[str] | Any) -> ModelFile:
    """Read a model file, pack a directory (a SavedModel) as ``.tar.gz``, or script a torch module
    into TorchScript bytes.

    Raises
    ------
    InvalidModel
        When a module cannot be scripted; tracing would need example inputs, so the user
        is told how to trace it themselves.
    """
    module_type = _torch_module_type()
    if module_type is not None and isinstance(model, module_type):
        return ModelFile(f"{type(model).__name__}.pt", _script(model))
    if isinstance(model, (str, PathLike)):
        path = Path(fspath(model))
        if path.is_dir():
            return ModelFile(f"{path.resolve().name}.tar.gz", _tar_gz(path))
        return ModelFile(path.name, path.read_bytes())
    raise TypeError(f"expected a model id, a Model, a file path or a torch module, got {type(model).__name__}")


def _tar_gz(directory: Path) -> bytes:
    """The directory as a ``.tar.gz`` of regular files and folders, the same bytes for the same content
    (sorted, no times or owners), so that uploading it twice gives the same model id."""
    out = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for path in [directory, *sorted(directory.rglob("*"))]:
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise InvalidModel(f"{path} is not a regular file or folder; a model upload cannot hold it")
            info = tarfile.TarInfo(str(Path(directory.resolve().name) / path.relative_to(directory)))
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = path.stat().st_size
                with open(path, "rb") as f:
                    archive.addfile(info, f)
    return out.getvalue()


def _torch_module_type() -> type | None:
    torch = sys.modules.get("torch")
    return None if torch is None else torch.nn.Module


def _script(module: Any) -> bytes:
    torch = sys.modules["torch"]
    if not isinstance(module, torch.jit.ScriptModule):
        try:
            module = torch.jit.script(module)
        except Exception as exc:  # torch raises several unrelated types here
            raise InvalidModel(
                f"could not script {type(module).__name__} with torch.jit.script ({exc}). "
                "Trace it yourself with example inputs, e.g. torch.jit.trace(module, (u, h)), "
                "and upload the traced module or a file saved with torch.jit.save"
            ) from exc
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    return buffer.getvalue()


def form_fields(**fields: Any) -> dict[str, str]:
    """Multipart form fields: ``None`` dropped, dicts as JSON, everything else as text."""
    return {
        name: json.dumps(value) if isinstance(value, dict) else str(value)
        for name, value in fields.items()
        if value is not None
    }


__all__ = [
    "NPZ_MEDIA_TYPE",
    "ArraysPayload",
    "ModelFile",
    "UploadHints",
    "arrays_payload",
    "as_state_array",
    "form_fields",
    "is_local_model",
    "model_file",
    "model_id",
    "options_payload",
]
