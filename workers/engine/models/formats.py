"""Model files: which format a file is, and loading it as a StepModel.

Each format registers a detector (``path -> bool``) and a loader; ``detect_format``
tries the detectors in order. ONNX and SavedModel are imported only when a file is
checked against them, so a torch-only worker never pays for TensorFlow or onnx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Protocol

from fpf_client.errors import InvalidModel

from .base import Dynamics, StepModel
from .contract import user_errors_as_invalid_model
from .torchscript import is_torchscript, load_torchscript


class Loader(Protocol):
    def __call__(
        self, path: str | Path, *, n_states: int | None, n_inputs: int | None, dynamics: Dynamics
    ) -> StepModel: ...


class Format(NamedTuple):
    """A model format: how to recognise its files and how to load them."""

    detect: Callable[[Path], bool]
    load: Loader


def _detect_savedmodel(path: Path) -> bool:
    from .savedmodel import looks_like_savedmodel

    return looks_like_savedmodel(path)


def _load_savedmodel(path: str | Path, **kwargs) -> StepModel:
    from .savedmodel import load_savedmodel

    return load_savedmodel(path, **kwargs)


def _detect_onnx(path: Path) -> bool:
    from .onnx_model import looks_like_onnx

    return looks_like_onnx(path)


def _load_onnx(path: str | Path, **kwargs) -> StepModel:
    from .onnx_model import load_onnx

    return load_onnx(path, **kwargs)


# Order matters: a SavedModel archive is recognised before an archive holding an .onnx file.
FORMATS: dict[str, Format] = {
    "torchscript": Format(is_torchscript, load_torchscript),
    "savedmodel": Format(_detect_savedmodel, _load_savedmodel),
    "onnx": Format(_detect_onnx, _load_onnx),
}


def register_format(name: str, detect: Callable[[Path], bool], load: Loader) -> None:
    """Add a model format (detectors run in registration order)."""
    FORMATS[name] = Format(detect, load)


def detect_format(path: str | Path) -> str:
    """The format of the model at ``path`` (a file, or a directory for directory formats).

    Raises
    ------
    InvalidModel
        When no registered format recognises it.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidModel(f"model file {path.name} does not exist")
    with user_errors_as_invalid_model("the model file does not fit the step contract"):
        for name, fmt in FORMATS.items():
            if fmt.detect(path):
                return name
    raise InvalidModel(f"{path.name} is not a model file of a supported format ({', '.join(FORMATS)})")


def load_model(
    path: str | Path,
    *,
    format: str | None = None,
    n_states: int | None = None,
    n_inputs: int | None = None,
    dynamics: Dynamics = "discrete",
) -> StepModel:
    """Load a model file as a checked StepModel.

    Parameters
    ----------
    path : the model file.
    format : ``"torchscript"``, ``"onnx"`` or ``"savedmodel"``; detected from the file when None.
    n_states, n_inputs : hints, checked by a dry run; needed when the file does not
        declare its shapes and they cannot be read off its parameters.
    dynamics : ``"discrete"`` (a map F) or ``"continuous"`` (a vector field f).

    Raises
    ------
    InvalidModel
        For every way the file can fail to fit the step contract; nothing else escapes.
    """
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise InvalidModel(f"unsupported model format {format!r} (supported: {', '.join(FORMATS)})")
    with user_errors_as_invalid_model("the model file does not fit the step contract"):
        return FORMATS[format].load(path, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics)
