"""Loading TorchScript step modules from files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from fpf_client.errors import InvalidModel

from .adapt import module_step_model
from .base import Dynamics
from .torch_step import TorchStepModel

_TORCHSCRIPT_RECORDS = frozenset({"data.pkl", "constants.pkl"})


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding data.pkl, constants.pkl and code/.

    Raises
    ------
    InvalidModel
        For a ``torch.save`` checkpoint (a zip with data.pkl but no code): it holds weights
        or a pickled module, which cannot be loaded without the user's Python classes.
    """
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            records = {name.split("/", 1)[1] for name in archive.namelist() if "/" in name}
    except (zipfile.BadZipFile, OSError):
        return False
    has_code = any(name.startswith("code/") for name in records)
    if records >= _TORCHSCRIPT_RECORDS and has_code:
        return True
    if "data.pkl" in records:
        raise InvalidModel(
            "this is a torch.save checkpoint, not TorchScript: export the model with torch.jit.script "
            "or torch.jit.trace and save it with torch.jit.save (see docs/model-contract.md)"
        )
    return False


def load_torchscript(
    path: str | Path, *, n_states: int | None = None, n_inputs: int | None = None, dynamics: Dynamics = "discrete"
) -> TorchStepModel:
    """Load a TorchScript file on the CPU and check it against the step contract.

    Raises
    ------
    InvalidModel
        The file does not load, or the module does not fit the contract.
    """
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as error:
        first_line = next((line for line in str(error).splitlines() if line.strip()), "")
        raise InvalidModel(f"not a loadable TorchScript file: {type(error).__name__}: {first_line}") from None
    return module_step_model(
        module, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics, format="torchscript", copy_module=False
    )
