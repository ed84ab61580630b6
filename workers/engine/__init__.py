"""The numerical engine: find and analyse fixed points of recurrent models, in-process.

>>> from workers.engine import find_fixed_points
>>> fps = find_fixed_points(model, initial_states)  # doctest: +SKIP
"""

from .finder import SearchRequest, batchable, find_fixed_points, find_fixed_points_batch
from .linear_updates import approximate_updates
from .models import StepModel, as_step_model, load_model
from .sampling import sample_inputs_and_states, sample_states

__all__ = [
    "SearchRequest",
    "StepModel",
    "approximate_updates",
    "as_step_model",
    "batchable",
    "find_fixed_points",
    "find_fixed_points_batch",
    "load_model",
    "sample_inputs_and_states",
    "sample_states",
]
