"""Roots the first pass missed or could not certify: midpoint restarts between attractors
(:mod:`..solvers.strategies.completeness`) and float64 refinement of samples stalled at the
dtype's rounding floor (:mod:`..precision`). Neither starts once the time limit has run out."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..precision import refine_in_float64
from ..solvers import Problem, SolveResult
from ..solvers.strategies.completeness import Unfinished, midpoint_restarts
from ..solvers.strategies.warm_start import finish
from .reporting import Reporter
from .run import Run, wants_refinement
from .samples import Samples
from .selection import unique_among


def complete(samples: Samples, run: Run, reporter: Reporter) -> Samples:
    """Add the midpoint restarts' samples (when :attr:`.Run.restarts`) and their new roots, and
    finish the initial states the first pass left to them (:attr:`.Samples.unfinished`)."""
    if not run.restarts or reporter.stopped is not None:
        return samples
    search, handover = samples.search, samples.unfinished
    restarts = midpoint_restarts(
        Problem(run.model, search.u_rows, run.dynamics),
        samples.result.x[samples.unique],
        samples.group[samples.unique],
        run.options,
        torch.Generator().manual_seed(run.options.random_seed),
        progress=reporter.hook("completeness"),
        unfinished=None
        if handover is None
        else Unfinished(handover.starts, samples.group[handover.rows], handover.options),
    )
    # The first pass's representatives stand for all its converged samples.
    candidates = [samples.unique]
    if handover is not None and restarts.unfinished is not None:
        finish(samples.result, handover, restarts.unfinished)
        candidates.append(handover.rows[restarts.unfinished.converged])
    candidates.append(samples.n + torch.nonzero(restarts.result.converged).squeeze(-1))
    extended = replace(
        samples,
        result=SolveResult.concatenate([samples.result, restarts.result]),
        starts=torch.cat([samples.starts, restarts.starts]),
        group=torch.cat([samples.group, restarts.group]),
        completeness_passes=restarts.passes,
        unfinished=None,
    )
    # in order of sample: among copies of a root at the rounding floor the earliest sample wins
    return replace(extended, unique=unique_among(extended, torch.cat(candidates).sort().values, run.options))


def refine(samples: Samples, run: Run, reporter: Reporter) -> Samples:
    """Continue in float64 the samples stalled at the rounding floor (as the options ask) and add
    the roots certified there."""
    if not wants_refinement(run.options) or reporter.stopped is not None:
        return samples
    refinement = refine_in_float64(
        run.model, samples.result, samples.inputs, run.dynamics, run.options, progress=reporter.hook("refinement")
    )
    refined = replace(samples, refinement=refinement)
    if not len(refinement.converged):
        return refined
    candidates = torch.cat([samples.unique, refinement.converged])
    return replace(refined, unique=unique_among(refined, candidates, run.options))
