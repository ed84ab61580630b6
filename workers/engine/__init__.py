"""The numerical engine: find and analyse fixed points of recurrent models, in-process.

>>> from workers.engine import find_fixed_points
>>> fps = find_fixed_points(model, initial_states)  # doctest: +SKIP

The model adapters (``load_model``, ``as_step_model``) are imported on first use, so that
importing the engine does not import every model framework they support.
"""

from __future__ import annotations

from typing import Any

from .finder import find_fixed_points
from .linearize import approximate_updates
from .models.base import StepModel
from .sampling import sample_inputs_and_states, sample_states

_FROM_MODELS = ("load_model", "as_step_model")


def __getattr__(name: str) -> Any:
    if name in _FROM_MODELS:
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "StepModel", "approximate_updates", "as_step_model", "find_fixed_points", "load_model",
    "sample_inputs_and_states", "sample_states",
]
