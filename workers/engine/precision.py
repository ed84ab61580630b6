"""Roots the search's dtype cannot certify: the rounding floor of q, and refinement in float64.

q = |G|^2 / 2 cannot be resolved below about 2 eps^2 |x|^2 (:func:`rounding_floor`): in float32
at d = 256 that is ~7e-12, above the reference's default tol_q of 1e-12, so a sample that reaches
a root stalls there instead of converging. :func:`refine_in_float64` continues one sample per
distinct such point with dense LM in float64 (the model's own weights, promoted): where q then
falls below tol_q the sample has converged to a root of the network as given. It is reported in
the search's dtype (the float64 root rounded to it), with the float64 q.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from fpf_client.errors import InvalidModel
from fpf_client.options import FinderOptions

from .analysis import unique_indices
from .models import Dynamics, StepModel
from .solvers import Problem, ProgressHook, SolveResult, Status
from .solvers.base import WatchedHook
from .solvers.methods.lm import solve_lm

#: A stalled sample with q below this many times its rounding floor stopped for want of precision.
FLOOR_FACTOR = 4.0
#: LM steps a refined sample takes at most in float64 (Newton needs a few from the floor).
REFINE_ITERS = 20
#: Samples refined together: n d^2 Jacobian entries at most (32 MiB in float64).
REFINE_MAX_ENTRIES = 2**22


def rounding_floor(x: torch.Tensor) -> torch.Tensor:
    """Per row of ``x: (k, d)``, the q below which G(x) is rounding noise in x's dtype.

    Each component of G = F(x) - x (or of f(x)) carries an error of about eps |x_j| from F and
    again from x, so q = |G|^2 / 2 cannot be resolved below about 2 eps^2 |x|^2: in float32 at
    |x_j| ~ 1 that is 7e-12 for d = 256, above the reference's default tol_q of 1e-12.
    """
    return 2.0 * torch.finfo(x.dtype).eps ** 2 * (x * x).sum(-1)


def at_rounding_floor(result: SolveResult) -> torch.Tensor:
    """Mask of the samples that stalled with q within :data:`FLOOR_FACTOR` of their rounding floor."""
    return (result.status == Status.STALLED) & (result.q < FLOOR_FACTOR * rounding_floor(result.x))


@dataclass
class Refinement:
    """What :func:`refine_in_float64` did: how many distinct stalled points it had to refine, which
    samples converged (indices into the result), why it could not run, if it could not, and
    whether the search's time ran out before it was done."""

    n_tried: int = 0
    converged: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    unavailable: str | None = None
    stopped: bool = False


def refine_in_float64(
    model: StepModel,
    result: SolveResult,
    inputs: torch.Tensor,
    dynamics: Dynamics,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
) -> Refinement:
    """Continue in float64 one sample per distinct point stalled at the rounding floor (in place).

    Parameters
    ----------
    model : StepModel
        The model the search ran; nothing is done when that was in float64.
    result : SolveResult
        Every sample's outcome; a refined sample that converges takes its float64 root (rounded
        to the search's dtype), q, step norm and status, and adds its float64 iterations.
    inputs : Tensor, (n, m)
        Each sample's input row.
    options : FinderOptions
        ``tol_unique`` (what is one point), ``tol_q`` and the solver settings.
    progress : callable, optional
        The search's progress hook: once it raises ``TimeUp`` (the time limit), refinement stops
        and the points not yet certified stay stalled (dense float64 steps are costly at large d).
    """
    if result.x.dtype == torch.float64:
        return Refinement()
    stalled = torch.nonzero(at_rounding_floor(result)).squeeze(-1)
    if len(stalled) == 0:
        return Refinement()
    keys = torch.cat([result.x[stalled], inputs[stalled]], dim=1)
    stalled = stalled[unique_indices(keys, result.q[stalled], options.tol_unique)]
    try:
        model64 = model.to(result.x.device, torch.float64)
    except InvalidModel as error:  # a SavedModel computes only in its signature's dtype
        return Refinement(len(stalled), unavailable=error.detail)
    settings = options.model_copy(update={"max_iters": REFINE_ITERS})
    size = max(1, REFINE_MAX_ENTRIES // result.x.shape[1] ** 2)
    winners = []
    watch = WatchedHook(progress)
    for start in range(0, len(stalled), size):
        part = stalled[start : start + size]
        if watch.fired:
            break
        problem = Problem(model64, inputs[part].to(torch.float64), dynamics)
        refined = solve_lm(problem, result.x[part].to(torch.float64), settings, progress=watch, warm_start=False)
        won, converged = part[refined.converged], refined.converged
        for name in ("x", "q", "dq", "step_norm"):
            getattr(result, name)[won] = getattr(refined, name)[converged].to(result.x.dtype)
        result.n_iters[won] += refined.n_iters[converged]
        result.status[won] = int(Status.CONVERGED)
        winners.append(won)
    return Refinement(len(stalled), torch.cat(winners), stopped=watch.fired)
