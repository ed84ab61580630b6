"""Anderson mixing as the cheap first phase of a Newton-type solver.

An Anderson step (:mod:`..methods.anderson`) costs one forward pass; a Newton step forms, or solves
with, a Jacobian for every sample. Where the map contracts toward a root, or Anderson's
multisecant model of the Jacobian is good enough, a few mixing steps converge a sample or
bring it into Newton's region of quadratic convergence for a fraction of one Newton step.
The Newton solver then finishes only what mixing left: samples still improving when the
mixing budget ran out continue from their best point (when the caller asks for it), samples
whose mixing stalled restart from their own initial state, since a stalled mixing ends near a
minimum of q that would trap a descent too.
"""

from __future__ import annotations

import torch

from fpf_client.options import FinderOptions

from ..base import Problem, ProgressHook, Solver, SolveResult, Status, WatchedHook
from ..methods.anderson import MEMORY, solve_anderson


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
        return first
    resume = (first.status[rest] == Status.CAPPED) if resume_capped else torch.zeros_like(rest, dtype=torch.bool)
    starts = torch.where(resume.unsqueeze(-1), first.x[rest], x0[rest])
    options = options.model_copy(update={"max_iters": budget})
    n_before, offset = int(first.converged.sum()), first.iterations

    def report(iteration: int, q: torch.Tensor, n_done: int) -> None:
        progress(offset + iteration, q, n_before + n_done)

    second = solver(problem.subset(rest), starts, options, progress=report if progress else None)
    second.n_iters += first.n_iters[rest]
    first.update(rest, second)
    first.iterations = offset + second.iterations
    return first
