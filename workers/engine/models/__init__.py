"""Model adapters: every supported model becomes a :class:`StepModel` (F, dF/dh, dF/du).

Public API: :func:`as_step_model` (objects), :func:`load_model` and :func:`detect_format`
(files). The step contract is documented in docs/model-contract.md.
"""

from .adapt import as_step_model, check_derivatives
from .base import Dynamics, StepModel
from .contract import check_step, discover_shapes
from .formats import FORMATS, detect_format, load_model, register_format
from .recurrent import RecurrentShape, recurrent_shape
from .torch_step import TorchStepModel

__all__ = [
    "FORMATS",
    "Dynamics",
    "RecurrentShape",
    "StepModel",
    "TorchStepModel",
    "as_step_model",
    "check_derivatives",
    "check_step",
    "detect_format",
    "discover_shapes",
    "load_model",
    "recurrent_shape",
    "register_format",
]
