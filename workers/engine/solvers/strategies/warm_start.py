"""Anderson mixing as the cheap first phase of a Newton-type solver.

An Anderson step (:mod:`..methods.anderson`) costs one forward pass; a Newton step forms, or solves
with, a Jacobian for every sample. Where the map contracts toward a root, or Anderson's
multisecant model of the Jacobian is good enough, a few mixing steps converge a sample or
bring it into Newton's region of quadratic convergence for a fraction of one Newton step.
The Newton solver then finishes only what mixing left: samples still improving when the
mixing budget ran out continue from their best point (when the caller asks for it), samples
whose mixing stalled restart from their own initial state, since a stalled mixing ends near a
minimum of q that would trap a descent too. A caller may also take the mixing's outcome and its
:class:`Handover` separately (:func:`mix`) and run the second phase later, together with other
samples (:func:`finish` then merges the two phases).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpf_client.options import FinderOptions

from ..base import Problem, ProgressHook, Solver, SolveResult, Status, WatchedHook
from ..methods.anderson import solve_anderson

#: Differences of iterates a warm start keeps (Walker & Ni: small memories, 3-10, work best);
#: ``method="anderson"`` alone keeps ``options.anderson.memory``.
MEMORY = 6


@dataclass
class Handover:
    """What the mixing leaves to the second phase of a warm start.

    Attributes
    ----------
    rows : Tensor, (k,) int
        The samples the mixing did not converge (positions in its batch).
    starts : Tensor, (k, d)
        Where the second phase starts each of them.
    options : FinderOptions
        The second phase's options: ``max_iters`` is what the mixing budget leaves.
    offset : int
        The mixing's iterations; the second phase's are counted after them.
    """

    rows: torch.Tensor
    starts: torch.Tensor
    options: FinderOptions
    offset: int

    @staticmethod
    def concatenate(parts: list[tuple[int, Handover | None]]) -> Handover | None:
        """The handovers of consecutive chunks, each given with the position of its first sample."""
        present = [(first, handover) for first, handover in parts if handover is not None]
        if not present:
            return None
        return Handover(
            rows=torch.cat([first + handover.rows for first, handover in present]),
            starts=torch.cat([handover.starts for _, handover in present]),
            options=present[0][1].options,
            offset=max(handover.offset for _, handover in present),
        )

    def within(self, first: int, end: int) -> Handover | None:
        """The part of this handover for the samples ``first:end`` of its batch, renumbered from 0."""
        inside = torch.nonzero((self.rows >= first) & (self.rows < end)).squeeze(-1)
        if not inside.numel():
            return None
        return Handover(self.rows[inside] - first, self.starts[inside], self.options, self.offset)


def anderson_then(
    solver: Solver,
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    progress: ProgressHook | None,
    *,
    mixing_iters: int,
    resume_capped: bool,
    memory: int = MEMORY,
    hand_over_slow: bool = False,
) -> SolveResult:
    """Anderson mixing from each row of ``x0`` for at most ``mixing_iters`` steps, then ``solver``
    on the samples it did not converge.

    Parameters
    ----------
    solver : Solver
        The second phase, called as ``solver(problem, starts, options, progress=...)``.
    mixing_iters : int
        Anderson steps at most (fewer when ``options.max_iters`` is smaller).
    resume_capped : bool
        Start ``solver`` from mixing's best point for samples that were still improving when
        the steps ran out; otherwise every sample left restarts from its row of ``x0``.
    memory, hand_over_slow
        Passed to :func:`.anderson.solve_anderson`: history length, and whether samples that
        converge too slowly leave the mixing early (as capped ones).

    Returns
    -------
    SolveResult
        ``n_iters`` and ``iterations`` count the steps of both phases together.
    """
    first, handover = mix(
        problem,
        x0,
        options,
        progress,
        mixing_iters=mixing_iters,
        resume_capped=resume_capped,
        memory=memory,
        hand_over_slow=hand_over_slow,
    )
    if handover is None:
        return first
    n_before = int(first.converged.sum()) if progress else 0  # for the reports only (a host sync)

    def report(iteration: int, q: torch.Tensor, n_done: int) -> None:
        progress(handover.offset + iteration, q, n_before + n_done)

    second = solver(
        problem.subset(handover.rows), handover.starts, handover.options, progress=report if progress else None
    )
    return finish(first, handover, second)


def mix(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    progress: ProgressHook | None,
    *,
    mixing_iters: int,
    resume_capped: bool,
    memory: int = MEMORY,
    hand_over_slow: bool = False,
) -> tuple[SolveResult, Handover | None]:
    """The first phase of :func:`anderson_then` (same parameters), and what it leaves to the second:
    None when the mixing converged every sample, left no budget or ran out of time."""
    watch = WatchedHook(progress)
    first = solve_anderson(
        problem,
        x0,
        options,
        progress=watch,
        max_iters=min(mixing_iters, options.max_iters),
        memory=memory,
        hand_over_slow=hand_over_slow,
    )
    rest = torch.nonzero(first.status != Status.CONVERGED).squeeze(-1)
    # The second phase's budget leaves room for the whole mixing budget, not for the steps the
    # batch's longest mixing took: a sample's steps then never depend on the samples beside it.
    budget = options.max_iters - min(mixing_iters, options.max_iters)
    if watch.fired or rest.numel() == 0 or budget <= 0:
        return first, None
    resume = (first.status[rest] == Status.CAPPED) if resume_capped else torch.zeros_like(rest, dtype=torch.bool)
    starts = torch.where(resume.unsqueeze(-1), first.x[rest], x0[rest])
    return first, Handover(rest, starts, options.model_copy(update={"max_iters": budget}), first.iterations)


def finish(first: SolveResult, handover: Handover, second: SolveResult) -> SolveResult:
    """``first`` (the mixing's outcome, updated in place) with the second phase's outcome
    ``second`` for the samples of ``handover``; each sample's ``n_iters`` counts both phases."""
    second.n_iters += first.n_iters[handover.rows]
    first.update(handover.rows, second)
    first.iterations = handover.offset + second.iterations
    return first
