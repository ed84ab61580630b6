"""Model files: which format a file is, and loading it as a StepModel.

Each format registers a detector (``path -> bool``), a loader and the tensor-naming
arguments its loader takes; ``detect_format`` tries the detectors in order. ONNX and
SavedModel are imported only when a file is checked against them, so a torch-only
worker never pays for TensorFlow or onnx.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, Protocol

from fpf_client.errors import InvalidModel

from .base import Dynamics, StepModel
from .contract import user_errors_as_invalid_model
from .torchscript import is_torchscript, load_torchscript

#: Upload fields naming a model's tensors: the SavedModel signature, and u, h and the next state.
NAMING_FIELDS = ("signature", "input_name", "state_name", "output_name")


class Loader(Protocol):
    def __call__(
        self, path: str | Path, *, n_states: int | None, n_inputs: int | None, dynamics: Dynamics, **naming: str
    ) -> StepModel: ...


class Format(NamedTuple):
    """A model format: how to recognise its files, how to load them, and which naming arguments
    (of :data:`NAMING_FIELDS`) its loader takes."""

    detect: Callable[[Path], bool]
    load: Loader
    naming: frozenset[str] = frozenset()


def _detect_savedmodel(path: Path) -> bool:
    from .savedmodel import looks_like_savedmodel

    return looks_like_savedmodel(path)


def _load_savedmodel(path: str | Path, **kwargs) -> StepModel:
    from .savedmodel import load_savedmodel

    return load_savedmodel(path, **kwargs)


def _detect_torch_export(path: Path) -> bool:
    from .torch_export import is_torch_export

    return is_torch_export(path)


def _load_torch_export(path: str | Path, **kwargs) -> StepModel:
    from .torch_export import load_torch_export

    return load_torch_export(path, **kwargs)


def _detect_onnx(path: Path) -> bool:
    from .onnx_model import looks_like_onnx

    return looks_like_onnx(path)


def _load_onnx(path: str | Path, **kwargs) -> StepModel:
    from .onnx_model import load_onnx

    return load_onnx(path, **kwargs)


# Order matters: a SavedModel archive is recognised before an archive holding an .onnx file.
FORMATS: dict[str, Format] = {
    "torchscript": Format(is_torchscript, load_torchscript),
    "torch_export": Format(_detect_torch_export, _load_torch_export),
    "savedmodel": Format(_detect_savedmodel, _load_savedmodel, frozenset(NAMING_FIELDS)),
    "onnx": Format(_detect_onnx, _load_onnx, frozenset({"input_name", "state_name", "output_name"})),
}

#: Why a format refuses the naming arguments it does not take.
_WHY_UNNAMED = {
    "torchscript": "a TorchScript module takes u and h by position, forward(u, h) -> h_next",
    "torch_export": "an exported program takes u and h by position, forward(u, h) -> h_next",
    "onnx": "an ONNX graph has no signatures, only its named inputs and outputs",
}


def register_format(
    name: str, detect: Callable[[Path], bool], load: Loader, naming: frozenset[str] = frozenset()
) -> None:
    """Add a model format (detectors run in registration order) whose loader takes the ``naming`` arguments."""
    FORMATS[name] = Format(detect, load, naming)


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
    signature: str | None = None,
    input_name: str | None = None,
    state_name: str | None = None,
    output_name: str | None = None,
) -> StepModel:
    """Load a model file as a checked StepModel.

    Parameters
    ----------
    path : the model file.
    format : ``"torchscript"``, ``"torch_export"``, ``"onnx"`` or ``"savedmodel"``; detected from the
        file when None.
    n_states, n_inputs : hints, checked by a dry run; needed when the file does not
        declare its shapes and they cannot be read off its parameters.
    dynamics : ``"discrete"`` (a map F) or ``"continuous"`` (a vector field f).
    signature : the SavedModel signature to run (``serving_default`` when None).
    input_name, state_name, output_name : the declared tensors playing u, h and the next
        state (ONNX and SavedModel); found by name when None.

    Raises
    ------
    InvalidModel
        For every way the file can fail to fit the step contract, and for naming
        arguments the format does not take; nothing else escapes.
    """
    if format is None:
        format = detect_format(path)
    if format not in FORMATS:
        raise InvalidModel(f"unsupported model format {format!r} (supported: {', '.join(FORMATS)})")
    given = {"signature": signature, "input_name": input_name, "state_name": state_name, "output_name": output_name}
    naming = {name: value for name, value in given.items() if value is not None}
    refused = [name for name in naming if name not in FORMATS[format].naming]
    if refused:
        why = _WHY_UNNAMED.get(format, f"its loader takes {', '.join(sorted(FORMATS[format].naming)) or 'none'}")
        raise InvalidModel(f"{', '.join(refused)} cannot be given for {format} models: {why}")
    with user_errors_as_invalid_model("the model file does not fit the step contract"):
        return FORMATS[format].load(path, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics, **naming)
