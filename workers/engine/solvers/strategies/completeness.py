"""Find roots the first Newton pass missed: restarts from midpoints between attractors.

Newton's basins differ from those of gradient descent on q: from the same initial states,
rare saddles that a slow descent stumbles on can be missed (on the 3-bit flip-flop, the
saddles with 2 and 3 unstable modes). A saddle of a recurrent network sits on the boundary
between the basins of the attractors its unstable manifold connects, close to the segment
joining them, so Newton restarted from the midpoint of two attractors of the same input
condition lands on the saddle between them: the classic way to find the saddles connecting
attractors. Attractors are the stable, isolated roots found so far; a condition with fewer
than two uses its isolated roots instead. A pass restarts from every pair not tried before
and passes repeat while they add seeds, so each pair is solved once. The first pass can also
take along samples of the first search that still need their Newton steps (:class:`Unfinished`):
their roots count as found by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpf_client.options import FinderOptions

from ...analysis import unique_indices
from ..base import Problem, ProgressHook, ResultBuffers, SolveResult
from ..methods.lm import solve_lm

#: At most this many restarts per pass (drawn at random from the untried pairs beyond it).
MAX_STARTS = 1024
MAX_PASSES = 3
#: The power certificates of a root's class (:func:`_certified`) look at A^k, k = 2^CERTIFICATE_SQUARINGS,
#: A = dF/dx: they settle roots whose eigenvalues stay clear of the unit circle, all but the rare
#: roots with |lambda| within a few percent of 1 (which take eigenvalues).
CERTIFICATE_SQUARINGS = 7
#: |trace A^k| above INSTABILITY_MARGIN * d certifies an eigenvalue outside the unit circle (above d
#: would, as |trace A^k| <= d rho^k; the margin is for rounding in the powers).
INSTABILITY_MARGIN = 1e3


@dataclass
class Unfinished:
    """Samples of the first search whose LM steps the first pass of restarts runs with its own."""

    starts: torch.Tensor  #: (k, d) where their LM starts
    group: torch.Tensor  #: (k,) input condition of each
    options: FinderOptions  #: their options, with the iteration budget left to them


@dataclass
class Restarts:
    """The restarts of a completeness search and what they found."""

    starts: torch.Tensor  #: (s, d) starting points
    group: torch.Tensor  #: (s,) input condition of each
    result: SolveResult  #: their outcome (``x``: a root where converged, new or not)
    passes: int  #: passes that ran restarts
    unfinished: SolveResult | None = None  #: the outcome of the :class:`Unfinished` samples taken along


def midpoint_restarts(
    problem: Problem,
    roots: torch.Tensor,
    root_group: torch.Tensor,
    options: FinderOptions,
    generator: torch.Generator,
    *,
    progress: ProgressHook | None = None,
    unfinished: Unfinished | None = None,
) -> Restarts:
    """Restart Newton between the roots found so far, until no new attractor turns up.

    Parameters
    ----------
    problem : Problem
        With one input row per input condition (``problem.inputs: (n_groups, m)``).
    roots : Tensor, (k, d)
        Unique roots found so far; ``root_group: (k,)`` their input conditions.
    options : FinderOptions
        Solver settings, ``tol_unique`` (what counts as a new root) and ``tol_nonisolated``.
    generator : torch.Generator
        Draws the restarts when a pass has more than ``MAX_STARTS`` candidates.
    unfinished : Unfinished, optional
        Samples the first pass solves in the same LM call as its restarts, with their options
        (the restarts of that pass share their iteration budget); it runs for them even without
        restarts.
    """
    seeds = _Seeds(problem, options)
    seeds.add(roots, root_group)
    starts_all, groups_all, results = [], [], []
    taken_along = unfinished
    unfinished_result = None
    while len(results) < MAX_PASSES and (seeds.untried or taken_along is not None):
        starts, start_group = seeds.untried_midpoints(generator)
        if len(starts) == 0 and taken_along is None:
            break
        k, settings = 0, options
        if taken_along is not None:
            k, settings = len(taken_along.starts), taken_along.options
            starts, start_group = torch.cat([taken_along.starts, starts]), torch.cat([taken_along.group, start_group])
            taken_along = None
        solved = solve_lm(problem.subset(start_group), starts, settings, progress=progress, warm_start=False)
        new = solved.converged & _far_from(solved.x, start_group, seeds.roots, seeds.group, options.tol_unique)
        new = torch.nonzero(new).squeeze(-1)
        keys = torch.cat([solved.x[new], start_group[new].unsqueeze(-1).to(solved.x.dtype)], dim=1)
        new = new[unique_indices(keys, solved.q[new], options.tol_unique)]
        seeds.add(solved.x[new], start_group[new])
        if k:
            unfinished_result = _own_part(solved, slice(0, k))
        if len(starts) > k:
            starts_all.append(starts[k:])
            groups_all.append(start_group[k:])
            results.append(_own_part(solved, slice(k, None)))
    if not results:
        empty = roots[:0]
        return Restarts(empty, root_group[:0], ResultBuffers(empty).result(0), 0, unfinished_result)
    return Restarts(
        torch.cat(starts_all), torch.cat(groups_all), SolveResult.concatenate(results), len(results), unfinished_result
    )


def _own_part(result: SolveResult, rows: slice) -> SolveResult:
    """The samples ``rows`` of a solver call's result, with the iterations its longest one took (as a
    call of their own would report them)."""
    part = result.select(rows)
    part.iterations = int(part.n_iters.max()) if len(part.q) else 0
    return part


class _Seeds:
    """Known roots, which of them restarts pair up, and the pairs already tried."""

    def __init__(self, problem: Problem, options: FinderOptions) -> None:
        self.problem = problem
        self.tol_nonisolated = options.tol_nonisolated
        d = problem.model.n_states
        device = problem.inputs.device
        self.roots = torch.zeros(0, d, dtype=problem.inputs.dtype, device=device)
        self.group = torch.zeros(0, dtype=torch.int64, device=device)
        self.stable = torch.zeros(0, dtype=torch.bool, device=device)
        self.isolated = torch.zeros(0, dtype=torch.bool, device=device)
        self.tried = torch.zeros(0, 0, dtype=torch.bool, device=device)
        #: Whether a pair may be left untried: only a new seed or a pass capped at MAX_STARTS leaves one
        #: (seeds of a condition change only when it gains its second attractor, itself a new seed).
        self.untried = False

    def add(self, roots: torch.Tensor, group: torch.Tensor) -> None:
        """Record new roots of the conditions ``group`` and classify them."""
        stable, isolated = self._classify(roots, group)
        k, new = len(self.roots), len(roots)
        self.roots = torch.cat([self.roots, roots])
        self.group = torch.cat([self.group, group])
        self.stable = torch.cat([self.stable, stable])
        self.isolated = torch.cat([self.isolated, isolated])
        tried = torch.zeros(k + new, k + new, dtype=torch.bool, device=self.tried.device)
        tried[:k, :k] = self.tried
        self.tried = tried
        self.untried = self.untried or bool(self._seeds()[k:].any())

    def untried_midpoints(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Midpoints of the seed pairs not tried yet (at most ``MAX_STARTS``), and their conditions."""
        same = self.group.unsqueeze(1) == self.group.unsqueeze(0)
        seed = self._seeds()
        pairs = (same & seed.unsqueeze(1) & seed.unsqueeze(0) & ~self.tried).triu(diagonal=1)
        i, j = torch.nonzero(pairs, as_tuple=True)
        self.untried = len(i) > MAX_STARTS
        if self.untried:
            pick = torch.randperm(len(i), generator=generator)[:MAX_STARTS].to(i.device)
            i, j = i[pick], j[pick]
        self.tried[i, j] = True
        return 0.5 * (self.roots[i] + self.roots[j]), self.group[i]

    def _seeds(self) -> torch.Tensor:
        """Mask of the roots restarts pair: the attractors of a condition with two, else its isolated roots."""
        attractor = self.stable & self.isolated
        return torch.where(_count_per_group(self.group, attractor)[self.group] >= 2, attractor, self.isolated)

    def _classify(self, roots: torch.Tensor, group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stable, isolated) masks of ``roots``: by power certificates where they settle what pairing
        needs (discrete time, :func:`_certified`), by eigenvalues elsewhere.

        A root certified unstable in a condition that has two attractors is never paired, since
        seeds are then attractors only (and stay so: attractors are never removed), so whether it
        is isolated does not matter; it is recorded as not isolated.
        """
        if not len(roots):
            empty = torch.zeros(0, dtype=torch.bool, device=roots.device)
            return empty, empty
        problem = self.problem.subset(group)
        jac = problem.jacobian(roots)
        if problem.dynamics != "discrete":
            return _eigen_classes(jac, problem.dynamics, self.tol_nonisolated)
        attractor, unstable = _certified(jac, self.tol_nonisolated)
        stable, isolated = attractor.clone(), attractor.clone()
        if bool(attractor.all()):
            return stable, isolated
        counts = _count_per_group(torch.cat([self.group, group]), torch.cat([self.stable & self.isolated, attractor]))
        rest = torch.nonzero(~attractor & ~(unstable & (counts[group] >= 2))).squeeze(-1)
        if rest.numel():
            stable[rest], isolated[rest] = _eigen_classes(jac[rest], problem.dynamics, self.tol_nonisolated)
        return stable, isolated


def _count_per_group(group: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How many rows of each condition (0 .. max(group)) ``mask`` holds."""
    size = int(group.max()) + 1 if len(group) else 0
    return torch.zeros(size, dtype=torch.int64, device=group.device).index_add_(0, group, mask.long())


def _certified(jac: torch.Tensor, tol_nonisolated: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(attractor, unstable) masks that powers of A = dF/dx = dG/dx + I prove, from dG/dx ``jac: (k, d, d)``.

    For every norm rho(A) <= |A^n|^(1/n): |A^n|_F <= (1 - tol_nonisolated)^n puts every eigenvalue
    within 1 - tol_nonisolated of 0, so the root is stable and isolated (|lambda - 1| >= tol). And
    |trace A^n| = |sum lambda^n| <= d rho^n, so a trace above d puts an eigenvalue outside the unit
    circle. A few squarings cost less than one eigenvalue decomposition; neither mask holds for
    roots near the unit circle (nor where the powers overflow to NaN), which are left to eigenvalues.
    """
    d = jac.shape[-1]
    power = jac.double() + torch.eye(d, dtype=torch.float64, device=jac.device)
    for _ in range(CERTIFICATE_SQUARINGS):
        power = power @ power
    n = 2**CERTIFICATE_SQUARINGS
    attractor = torch.linalg.matrix_norm(power) <= (1.0 - tol_nonisolated) ** n
    unstable = power.diagonal(dim1=-2, dim2=-1).sum(-1).abs() > INSTABILITY_MARGIN * d
    return attractor, unstable


def _eigen_classes(jac: torch.Tensor, dynamics: str, tol_nonisolated: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(stable, isolated) masks from the eigenvalues of dG/dx ``jac: (k, d, d)`` (in float64)."""
    eig = torch.linalg.eigvals(jac.double().cpu())
    if dynamics == "discrete":  # eigenvalues of dF/dx are those of dG/dx plus one
        stable = ((eig + 1).abs() < 1).all(-1)
    else:
        stable = (eig.real < 0).all(-1)
    isolated = (eig.abs() >= tol_nonisolated).all(-1)
    return stable.to(jac.device), isolated.to(jac.device)


def _far_from(
    x: torch.Tensor, x_group: torch.Tensor, roots: torch.Tensor, root_group: torch.Tensor, tol: float
) -> torch.Tensor:
    """Mask of points farther than ``tol`` (max-norm) from every root of their own condition."""
    if len(roots) == 0:
        return torch.ones(len(x), dtype=torch.bool, device=x.device)
    dist = (x.unsqueeze(1) - roots.unsqueeze(0)).abs().amax(-1)
    dist = torch.where(x_group.unsqueeze(1) == root_group.unsqueeze(0), dist, torch.full_like(dist, float("inf")))
    return dist.amin(1) > tol
