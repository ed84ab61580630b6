"""Choosing the points: one representative per distinct root, polished by a Newton step, then
screened for distance and q outliers and capped at ``max_n_unique``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from fpf_client.fixed_points import reference_unique_indices
from fpf_client.options import FinderOptions

from ..analysis import distance_inliers, q_outliers, unique_indices
from ..solvers import Problem, SolveResult, get_solver
from ..solvers.strategies.warm_start import Handover
from .inputs import Search
from .run import Run
from .samples import Samples


def select_unique(
    search: Search, result: SolveResult, options: FinderOptions, unfinished: Handover | None = None
) -> Samples:
    """The request's samples after the solve, with one representative per distinct root (and the
    samples still to be finished by the restarts' LM)."""
    unique = unique_converged(result, search.u_rows[search.group], options)
    return Samples(search, result, search.x0, search.group, unique, unfinished=unfinished)


def unique_converged(result: SolveResult, inputs: torch.Tensor, options: FinderOptions) -> torch.Tensor:
    """Indices of one representative per distinct root (and input), by ``options.unique_rule``:
    converged samples in max-norm, or (``"reference"``) every sample with a finite q, grouped
    the reference's way in 2-norm."""
    if options.unique_rule == "reference":
        candidates = torch.nonzero(torch.isfinite(result.q)).squeeze(-1)
        keys = torch.cat([result.x[candidates], inputs[candidates]], dim=1).detach().cpu().double().numpy()
        kept = reference_unique_indices(keys, result.q[candidates].detach().cpu().double().numpy(), options.tol_unique)
        return candidates[torch.as_tensor(kept, device=candidates.device)]
    converged = torch.nonzero(result.converged).squeeze(-1)
    keys = torch.cat([result.x[converged], inputs[converged]], dim=1)
    return converged[unique_indices(keys, result.q[converged], options.tol_unique)]


def unique_among(samples: Samples, candidates: torch.Tensor, options: FinderOptions) -> torch.Tensor:
    """The samples among ``candidates`` (indices) that represent distinct roots."""
    picked = samples.result.select(candidates)
    return candidates[unique_converged(picked, samples.search.u_rows[samples.group[candidates]], options)]


def polish(samples: Samples, run: Run) -> Samples:
    """One undamped Newton step from each unique root, kept where it lowers q (in place), then
    de-duplicate again.

    Solvers stop as soon as q < tol_q, which leaves an error of about sqrt(2 tol_q) / |dG/dx|
    that depends on where a sample started; near an isolated root a plain Newton step roughly
    squares it. The points reported are then as accurate as the dtype allows, and copies of one
    root that stopped at different distances merge in the uniqueness test that follows.
    """
    result = samples.result
    keep = samples.unique[result.converged[samples.unique]]  # the reference rule also keeps unconverged samples
    if not len(keep):
        return samples
    roots = Problem(run.model, samples.inputs[keep], run.dynamics)
    x = result.x[keep]
    g = roots.residual(x)
    step = newton_steps(roots.jacobian(x), g)
    g_try = roots.residual(x + step)
    q_try = 0.5 * (g_try * g_try).sum(-1)
    better = torch.isfinite(q_try) & (q_try < result.q[keep])
    result.x[keep[better]] = x[better] + step[better]
    result.q[keep[better]] = q_try[better]
    return replace(samples, unique=unique_among(samples, samples.unique, run.options))


def newton_steps(jac: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The Newton step ``jac @ step = -g`` of each row: by LU where its pivots show ``jac`` well
    conditioned (ratio above sqrt(eps)), else the minimum-norm least-squares step (by SVD, LAPACK's
    gelsd, on the host: the default gelsy returned zeros or that step at random on an exactly
    singular ``jac``), which takes no step along a continuum of roots. LU costs a third of least
    squares on the few dozen 16 x 16 systems of a search's roots, and solves a well-conditioned
    system alike."""
    rhs = -g.unsqueeze(-1)
    lu, pivots, info = torch.linalg.lu_factor_ex(jac)
    step = torch.linalg.lu_solve(lu, pivots, rhs).squeeze(-1)
    pivot = lu.diagonal(dim1=-2, dim2=-1).abs()
    rank_doubt = pivot.amin(-1) <= math.sqrt(torch.finfo(jac.dtype).eps) * pivot.amax(-1)
    rows = torch.nonzero(rank_doubt | (info != 0) | ~torch.isfinite(step).all(-1)).squeeze(-1)
    if rows.numel():
        driver = "gelsd" if jac.device.type == "cpu" else None  # CUDA offers gels only
        step[rows] = torch.linalg.lstsq(jac[rows], rhs[rows], driver=driver).solution.squeeze(-1)
    return step


def screen(samples: Samples, run: Run) -> Samples:
    """Drop distance outliers, rerun q outliers (as the options ask) and keep at most ``max_n_unique``."""
    options, keep = run.options, samples.unique
    initial = samples.starts.detach().cpu().double().numpy()  # restarts' starts included
    if options.do_exclude_distance_outliers and len(keep):
        inliers = distance_inliers(
            samples.result.x[keep].cpu().double().numpy(), initial, options.outlier_distance_scale
        )
        keep = keep[torch.as_tensor(inliers, device=keep.device)]
    if options.do_rerun_q_outliers and len(keep):
        keep = _rerun_q_outliers(replace(samples, unique=keep), run)
    if options.max_n_unique is not None and len(keep) > options.max_n_unique:
        rng = np.random.default_rng(options.random_seed)
        chosen = np.sort(rng.choice(len(keep), options.max_n_unique, replace=False))
        keep = keep[torch.as_tensor(chosen, device=keep.device)]
    return replace(samples, unique=keep)


def _rerun_q_outliers(samples: Samples, run: Run) -> torch.Tensor:
    """Solve again, from where they stopped, the points whose q is far above the median; keep
    what improved (in place) and return the representatives of distinct roots."""
    result, keep = samples.result, samples.unique
    outliers = keep[
        torch.as_tensor(q_outliers(result.q[keep].cpu().numpy(), run.options.outlier_q_scale), device=keep.device)
    ]
    if len(outliers) == 0:
        return keep
    problem = Problem(run.model, samples.inputs[outliers], run.dynamics)
    rerun = get_solver(run.options.method)(problem, result.x[outliers], run.options)
    better = rerun.q < result.q[outliers]
    result.update(outliers[better], rerun.select(better))
    return keep[unique_converged(result.select(keep), samples.inputs[keep], run.options)]
