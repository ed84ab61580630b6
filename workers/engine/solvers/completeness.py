"""Find roots that plain Newton missed: deflated restarts between the roots already found.

Newton's basins differ from those of gradient descent on q: from the same initial states,
rare saddles that a slow descent stumbles on can be missed. Saddles of a recurrent network
sit between its other fixed points (on the boundary of their basins), so each pass restarts
Newton from midpoints of pairs of known roots of the same input condition, plus a few of the
original initial states, with every known root deflated so Newton cannot fall back into
them. Passes repeat while they find new roots.
"""

from __future__ import annotations

import torch

from fpf_client.options import FinderOptions

from ..analysis import unique_indices
from .base import Problem, ProgressHook, SolveResult
from .deflation import Deflation
from .newton import solve_newton

#: At most this many restarts per pass (midpoints first, then initial states).
MAX_STARTS = 768
#: Of which at most this many are original initial states.
MAX_INITIAL_STARTS = 128
MAX_PASSES = 3


def deflated_restarts(
    problem: Problem,
    initial_states: torch.Tensor,
    group: torch.Tensor,
    roots: torch.Tensor,
    root_group: torch.Tensor,
    options: FinderOptions,
    generator: torch.Generator,
    *,
    progress: ProgressHook | None = None,
) -> tuple[torch.Tensor, torch.Tensor, SolveResult, int]:
    """Search for roots missing from ``roots``.

    Parameters
    ----------
    problem : Problem
        With one input row per input condition (``problem.inputs: (n_groups, m)``).
    initial_states : Tensor, (n, d)
        The first pass's starting points; ``group: (n,)`` their input conditions.
    roots : Tensor, (k, d)
        Unique roots found so far; ``root_group: (k,)`` their input conditions.
    generator : torch.Generator
        Draws the restarts when there are more candidates than ``MAX_STARTS``.

    Returns
    -------
    starts : Tensor, (s, d)
        Starting points of all restarts; ``start_group: (s,)`` their input conditions.
    result : SolveResult
        Their outcome (``x``: new roots where converged).
    passes : int
        Passes run.
    """
    starts_all: list[torch.Tensor] = []
    groups_all: list[torch.Tensor] = []
    results: list[SolveResult] = []
    new_roots, new_group = roots, root_group
    passes = 0
    for passes in range(1, MAX_PASSES + 1):
        starts, start_group = _restarts(
            initial_states, group, roots, root_group, new_roots, new_group, generator
        )
        if len(starts) == 0:
            passes -= 1
            break
        deflation = Deflation(roots, root_group, start_group)
        result = solve_newton(
            problem.subset(start_group), starts, options, progress=progress, deflation=deflation
        )
        starts_all.append(starts)
        groups_all.append(start_group)
        results.append(result)
        found = result.converged & _far_from(result.x, start_group, roots, root_group, options.tol_unique)
        if not found.any():
            break
        keys = torch.cat([result.x[found], start_group[found].unsqueeze(-1).to(result.x.dtype)], dim=1)
        keep = torch.nonzero(found).squeeze(-1)[unique_indices(keys, result.q[found], options.tol_unique)]
        new_roots, new_group = result.x[keep], start_group[keep]
        roots, root_group = torch.cat([roots, new_roots]), torch.cat([root_group, new_group])
    if not results:
        empty = initial_states[:0]
        return empty, group[:0], solve_newton(problem.subset(group[:0]), empty, options), 0
    return torch.cat(starts_all), torch.cat(groups_all), SolveResult.concatenate(results), passes


def _restarts(
    initial_states: torch.Tensor,
    group: torch.Tensor,
    roots: torch.Tensor,
    root_group: torch.Tensor,
    new_roots: torch.Tensor,
    new_group: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints of (new root, known root) pairs of one condition, and a few initial states."""
    same = new_group.unsqueeze(1) == root_group.unsqueeze(0)  # (k_new, k)
    pairs = same & ((new_roots.unsqueeze(1) - roots.unsqueeze(0)).abs().amax(-1) > 0)
    if new_roots is roots:  # the first pass: each unordered pair once
        pairs = pairs.triu(diagonal=1)
    i, j = torch.nonzero(pairs, as_tuple=True)
    mids = 0.5 * (new_roots[i] + roots[j])
    mid_group = new_group[i]
    n_init = min(MAX_INITIAL_STARTS, len(initial_states))
    pick = torch.randperm(len(initial_states), generator=generator, device="cpu")[:n_init].to(group.device)
    n_mid = min(len(mids), MAX_STARTS - n_init)
    mid_pick = torch.randperm(len(mids), generator=generator, device="cpu")[:n_mid].to(group.device)
    starts = torch.cat([mids[mid_pick], initial_states[pick]])
    return starts, torch.cat([mid_group[mid_pick], group[pick]])


def _far_from(
    x: torch.Tensor, x_group: torch.Tensor, roots: torch.Tensor, root_group: torch.Tensor, tol: float
) -> torch.Tensor:
    """Mask of points farther than ``tol`` (max-norm) from every root of their own condition."""
    if len(roots) == 0:
        return torch.ones(len(x), dtype=torch.bool, device=x.device)
    dist = (x.unsqueeze(1) - roots.unsqueeze(0)).abs().amax(-1)
    dist = torch.where(x_group.unsqueeze(1) == root_group.unsqueeze(0), dist, torch.full_like(dist, float("inf")))
    return dist.amin(1) > tol
