"""What the stages after the solve pass on: a request's samples and the representatives kept."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..precision import Refinement
from ..solvers import SolveResult
from ..solvers.strategies.warm_start import Handover
from .inputs import Search, labels


@dataclass(frozen=True)
class Samples:
    """One request's samples: its initial states' outcomes, then those of its restarts.

    Attributes
    ----------
    search : Search
        The request's checked arrays.
    result : SolveResult
        Every sample's outcome (the first ``search.n`` are the initial states').
    starts : Tensor, (N, d)
        Where each sample started.
    group : Tensor, (N,) int
        Each sample's input condition (a row of ``search.u_rows``).
    unique : Tensor, (k,) int
        The samples kept as representatives of distinct roots.
    completeness_passes : int
        Passes of the midpoint restarts.
    refinement : Refinement
        What the float64 refinement did.
    unfinished : Handover or None
        Initial states the first pass's mixing left for LM steps that the midpoint restarts take
        along (:attr:`.run.Run.newton_with_restarts`); None once they are solved.
    """

    search: Search
    result: SolveResult
    starts: torch.Tensor
    group: torch.Tensor
    unique: torch.Tensor
    completeness_passes: int = 0
    refinement: Refinement = field(default_factory=Refinement)
    unfinished: Handover | None = None

    @property
    def n(self) -> int:
        """Initial states (the samples before the restarts)."""
        return self.search.n

    @property
    def inputs(self) -> torch.Tensor:
        """Each sample's input row, (N, m)."""
        return self.search.u_rows[self.group]

    def labels(self) -> np.ndarray:
        """Each sample's cond_id."""
        return labels(self.search, self.group)
