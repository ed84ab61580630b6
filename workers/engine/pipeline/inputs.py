"""A request's arrays, checked against the model and each other and moved to the solver's device.

Bad arrays raise :class:`~fpf_client.errors.ShapeMismatch` or :class:`~fpf_client.errors.NonFinite`
before any search starts. Each distinct input row is one input condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fpf_client.errors import NonFinite, ShapeMismatch

from ..models import StepModel


@dataclass(frozen=True)
class SearchRequest:
    """One search of a batch (:func:`~workers.engine.find_fixed_points_batch`): its starting points,
    inputs and labels, as :func:`~workers.engine.find_fixed_points` takes them.

    Attributes
    ----------
    initial_states : array-like, (n, n_states)
    inputs : array-like, (1 | n, n_inputs), optional
    cond_ids : array-like of int, (n,), optional
    """

    initial_states: Any
    inputs: Any = None
    cond_ids: Any = None


@dataclass(frozen=True)
class Search:
    """A request's checked arrays on the solver's device and dtype.

    Attributes
    ----------
    x0 : Tensor, (n, d)
        Initial states (a copy).
    u_rows : Tensor, (c, m)
        The distinct input rows (input conditions).
    group : Tensor, (n,) int
        Each initial state's condition.
    cond_ids : ndarray, (n,), or None
        The caller's labels.
    """

    x0: torch.Tensor
    u_rows: torch.Tensor
    group: torch.Tensor
    cond_ids: np.ndarray | None

    @property
    def n(self) -> int:
        return self.x0.shape[0]

    def sample_inputs(self) -> torch.Tensor:
        """Inputs as a solver takes them: the one shared row, or one row per initial state."""
        return self.u_rows if len(self.u_rows) == 1 else self.u_rows[self.group]


def prepare(request: SearchRequest, model: StepModel, dtype: torch.dtype, device: torch.device) -> Search:
    """Check a request's arrays and copy them to ``device`` in ``dtype``."""
    x0 = _as_tensor(request.initial_states, "initial_states", dtype, device)
    n = _check_states(x0, model)
    u = _check_inputs(request.inputs, n, model, dtype, device)
    u_rows, group = _conditions(u, n)
    return Search(x0, u_rows, group, _check_cond_ids(request.cond_ids, n))


def labels(search: Search, sample_group: torch.Tensor) -> np.ndarray:
    """Every sample's cond_id, restarts after the initial states (``sample_group``: each one's
    condition): the caller's label (restarts: that of the first initial state with their input),
    or the sample's input condition."""
    if search.cond_ids is None:
        return sample_group.cpu().numpy()
    first: dict[int, int] = {}
    for index, g in enumerate(search.group.cpu().numpy().tolist()):
        first.setdefault(g, index)
    restarts = sample_group[search.n :].cpu().numpy()
    if not len(restarts):
        return search.cond_ids
    return np.concatenate([search.cond_ids, search.cond_ids[[first[g] for g in restarts.tolist()]]])


def _as_tensor(array: Any, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A fresh tensor (never a view of the caller's memory), checked to be finite."""
    tensor = torch.as_tensor(np.asarray(array.detach().cpu() if isinstance(array, torch.Tensor) else array))
    tensor = tensor.to(device=device, dtype=dtype, copy=True)
    if not torch.isfinite(tensor).all():
        raise NonFinite(f"{name} contains NaN or infinite values", field=name)
    return tensor


def _check_states(x0: torch.Tensor, model: StepModel) -> int:
    if x0.ndim != 2 or x0.shape[1] != model.n_states or x0.shape[0] == 0:
        raise ShapeMismatch(
            f"initial_states has shape {tuple(x0.shape)}; expected (n, {model.n_states}) with n >= 1",
            field="initial_states",
        )
    return x0.shape[0]


def _check_inputs(inputs: Any, n: int, model: StepModel, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if inputs is None:
        return torch.zeros(1, model.n_inputs, dtype=dtype, device=device)
    u = _as_tensor(inputs, "inputs", dtype, device)
    if u.ndim != 2 or u.shape[1] != model.n_inputs or u.shape[0] not in (1, n):
        raise ShapeMismatch(f"inputs has shape {tuple(u.shape)}; expected (1 or {n}, {model.n_inputs})", field="inputs")
    return u


def _check_cond_ids(cond_ids: Any, n: int) -> np.ndarray | None:
    """The caller's per-sample labels as a flat array of n entries, or None."""
    if cond_ids is None:
        return None
    labels = np.asarray(cond_ids.detach().cpu() if isinstance(cond_ids, torch.Tensor) else cond_ids).reshape(-1)
    if labels.shape[0] != n:
        raise ShapeMismatch(
            f"cond_ids has {labels.shape[0]} entries; expected one per initial state ({n})", field="cond_ids"
        )
    return labels


def _conditions(u: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct input rows (the input conditions) and each sample's condition index."""
    if len(u) == 1:
        return u, torch.zeros(n, dtype=torch.int64, device=u.device)
    rows, group = torch.unique(u, dim=0, return_inverse=True)
    return rows, group
