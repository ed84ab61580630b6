"""Model files: which format a file is, and loading it as a StepModel.

Each format registers a detector (``path -> bool``) and a loader; ``detect_format``
tries the detectors in order. TorchScript is built in; ONNX and SavedModel register
here when their adapters exist.
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


FORMATS: dict[str, Format] = {"torchscript": Format(is_torchscript, load_torchscript)}


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
    format : ``"torchscript"``; detected from the file when None.
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
