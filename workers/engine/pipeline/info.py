"""The search's record: counts, the discovery curve, warnings, method, limits and timing.

:class:`SearchInfo` is typed where the result's ``info`` is a plain mapping: ``FixedPoints``
(the client's contract) keeps ``info`` a dict, since it also holds what older results,
hand-written JSON and the service hand it. :meth:`SearchInfo.as_dict` gives the keys, in
order, that ``info`` has always had in JSON and in the npz result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions

from ..analysis import discovery_curve
from ..precision import FLOOR_FACTOR, Refinement, at_rounding_floor, rounding_floor
from ..solvers import SolveResult, Status
from .reporting import Reporter
from .run import Run
from .samples import Samples


@dataclass(frozen=True)
class SearchInfo:
    """How one search went (docs/engine.md, "info and the discovery curve").

    Attributes
    ----------
    discovery_curve : dict
        ``{"n_initial_states": [...], "n_certified_roots": [...]}``: distinct certified roots
        reached from the first N initial states.
    n_fixed_points, n_certified : int
        Points reported, and how many are certified (None without the analysis' flags).
    n_samples, n_converged, n_stalled, n_capped : int
        Initial states, and how their search ended.
    n_stalled_at_rounding_floor, n_refined_in_float64 : int
        Precision: samples stalled at the dtype's floor, and those certified in float64.
    warnings : list of str
        Advice for the user.
    n_restarts, n_restarts_converged, completeness_passes : int
        The midpoint restarts.
    method : str
        The solver that ran.
    partial : bool
    partial_reason : str or None
        Whether and why the time limit stopped the search.
    iterations : int
        The solver loop's iterations (the longest sample's; in a batch, the shared pass's).
    device, dtype : str
    wall_time_s : float
    """

    discovery_curve: dict[str, list[int]]
    n_fixed_points: int
    n_certified: int | None
    n_samples: int
    n_converged: int
    n_stalled: int
    n_capped: int
    n_stalled_at_rounding_floor: int
    n_refined_in_float64: int
    warnings: list[str]
    n_restarts: int
    n_restarts_converged: int
    completeness_passes: int
    method: str
    partial: bool
    partial_reason: str | None
    iterations: int
    device: str
    dtype: str
    wall_time_s: float

    def as_dict(self) -> dict[str, Any]:
        """``FixedPoints.info``: one key per field, in this order (the record is built for this
        result alone, so its lists are handed over, not deep-copied as ``dataclasses.asdict`` would)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def record(samples: Samples, fps: FixedPoints, run: Run, reporter: Reporter) -> SearchInfo:
    """The record of a request's search, from its samples and the points reported."""
    result, n = samples.result, samples.n
    first_pass = result.select(slice(0, n))
    at_floor = at_rounding_floor(first_pass)
    advice = _precision_warning(first_pass, at_floor, samples.refinement, run.options)
    status = result.status
    first_outcomes = torch.bincount(status[:n], minlength=len(Status)).tolist()
    return SearchInfo(
        discovery_curve=_discovery_curve(samples, fps, run.options),
        n_fixed_points=fps.n,
        n_certified=int(fps.certified.sum()) if fps.certified is not None else None,
        n_samples=n,
        n_converged=first_outcomes[Status.CONVERGED],
        n_stalled=first_outcomes[Status.STALLED],
        n_capped=first_outcomes[Status.CAPPED],
        n_stalled_at_rounding_floor=int(at_floor.sum()),
        n_refined_in_float64=len(samples.refinement.converged),
        warnings=[advice] if advice else [],
        n_restarts=len(result.q) - n,
        n_restarts_converged=int((status[n:] == Status.CONVERGED).sum()),
        completeness_passes=samples.completeness_passes,
        method=run.options.method,
        partial=reporter.stopped is not None,
        partial_reason=reporter.stopped,
        iterations=int(result.iterations),
        device=str(run.device),
        dtype=run.options.dtype,
        wall_time_s=time.perf_counter() - run.started,
    )


def _discovery_curve(samples: Samples, fps: FixedPoints, options: FinderOptions) -> dict[str, list[int]]:
    """Distinct certified roots reached from the first N initial states, for growing N."""
    n, result = samples.n, samples.result
    converged = torch.nonzero(result.converged[:n]).squeeze(-1)
    inputs = samples.search.u_rows[samples.search.group[converged]]
    points_reached = torch.cat([result.x[converged], inputs], dim=1).cpu().numpy()  # compared in the search's dtype
    points = np.concatenate([fps.xstar, fps.inputs], axis=1).astype(points_reached.dtype)
    certified = fps.certified if fps.certified is not None else np.ones(fps.n, dtype=bool)
    return discovery_curve(converged.cpu().numpy(), points_reached, points, certified, n, options.tol_unique)


def _precision_warning(
    first_pass: SolveResult, at_floor: torch.Tensor, refinement: Refinement, options: FinderOptions
) -> str | None:
    """Advice when samples (``at_floor``) stalled at the dtype's rounding floor (:mod:`..precision`)
    and float64 refinement could not certify every distinct point among them."""
    count = int(at_floor.sum())
    unresolved = refinement.n_tried - len(refinement.converged)
    if count == 0 or (first_pass.x.dtype != torch.float64 and unresolved == 0):
        return None
    typical = float(rounding_floor(first_pass.x[at_floor]).median())
    if refinement.unavailable:
        refined = f" They could not be refined in float64: {refinement.unavailable}."
    elif refinement.stopped:
        refined = (
            f" The time limit ended their refinement in float64 with {len(refinement.converged)} of the "
            f"{refinement.n_tried} distinct points among them certified."
        )
    elif refinement.n_tried:
        refined = (
            f" {unresolved} of the {refinement.n_tried} distinct points among them did not converge in float64 either."
        )
    else:
        refined = ""
    return (
        f"{count} samples stalled with q within {FLOOR_FACTOR:g}x of the smallest q that {options.dtype} "
        f"resolves at their points (~{typical:.0e}, above tol_q = {options.tol_q:g}): they are probably "
        f"fixed points this dtype cannot bring below tol_q.{refined} Run with dtype='float64', or with tol_q "
        f"of about {10 * typical:.0e} or more."
    )
