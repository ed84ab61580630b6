"""Anderson acceleration of the fixed-point iteration x <- x + G(x), batched, one model pass a step.

Where F contracts near a root (a stable point of a network driven below the edge of chaos, a
GRU whose gates mix old and new state), the plain iteration x <- F(x) converges linearly at
the contraction rate and costs one forward pass per step: no Jacobian products at all.
Anderson mixing (Anderson 1965; Walker & Ni 2011, "type II") extrapolates from the last
``memory`` iterates (``options.anderson.memory``; Walker & Ni: small memories, 3-10, work
best): each sample solves a tiny least-squares problem
min_gamma |G_k - dG gamma| over its own differences of residuals dG, and steps to
x_k + G_k - (dX + dG) gamma, which near a root behaves like GMRES on the linearised map
(Walker & Ni) while costing a forward pass instead of a Krylov solve.

Safeguards make it honest where F does not contract: a sample whose residual grows past
``GROWTH`` times its best restarts its history from its best point, and a sample without a new
best for ``PATIENCE`` steps stops as ``STALLED`` at its best point (q below tol_q is the only
way to ``CONVERGED``), so a caller can hand the stalled samples to a Newton-type solver. As a
warm start it can also end samples that converge too slowly to be worth more mixing steps
(``hand_over_slow``), as capped at their best points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from fpf_client.options import FinderOptions

from ..base import HostChecks, Problem, ProgressHook, ResultBuffers, SolveResult, Status

#: A residual norm this many times a sample's best restarts its history from its best point.
GROWTH = 10.0
#: Steps without a new best |G| (by at least IMPROVEMENT, relative) before a sample stops as stalled.
PATIENCE = 15
IMPROVEMENT = 1e-3
#: Tikhonov regularisation of each least-squares problem, relative to each difference's squared
#: length (the Gram matrix's diagonal is scaled by 1 + RIDGE; a zero difference gets 1e-300).
RIDGE = 1e-10
#: Steps between host synchronisations (best points, restarts, status checks, compaction,
#: progress): on a GPU each waits for the device; on the CPU that bookkeeping costs more kernels
#: than a mixing step, and compacting the batch more than the few extra steps a finished sample
#: takes (it keeps its best point).
CHECK_EVERY = 4
#: ... and with a single difference, whose step is a handful of element-wise kernels (no
#: least-squares solve): there a check costs as much as one or two steps, so checks come half as
#: often (on the 16-unit flip-flops 0.8 ms, 5 %, of a whole search; with 6 differences the same
#: spacing costs the 64-unit GRU and LSTM 8-12 % more steps than it saves in checks).
CHECK_EVERY_SINGLE = 8
#: With ``hand_over_slow``, from this step on (at host checks) a sample ends as ``CAPPED`` when its
#: q has fallen by less than MIN_DECADES_PER_STEP decades per step on average, or would not reach
#: tol_q within the steps left at that average rate: a Newton-type solver finishes it for less.
RATE_MIN_STEPS = 10
MIN_DECADES_PER_STEP = 0.1


@dataclass
class _Batch:
    """The running samples: iterate, residual, best point so far and mixing history."""

    index: torch.Tensor  #: position in the caller's batch
    x: torch.Tensor  #: replaced by each step, never written in place (``best_x`` may be it)
    g: torch.Tensor  #: G(x), as ``x``
    best_x: torch.Tensor
    best_g: torch.Tensor
    best_q: torch.Tensor
    start_q: torch.Tensor  #: q at the sample's start
    since_best: torch.Tensor  #: steps since the last new best (counted at host checks)
    df: torch.Tensor  #: (n, memory, d) differences of x + G(x) between steps, a ring buffer (empty slots: 0)
    dg: torch.Tensor  #: (n, memory, d) differences of G(x)
    gram: torch.Tensor  #: (n, memory, memory) dG dG^T, updated one slot at a time (float64 when memory > 1)
    dq: torch.Tensor

    def keep(self, index: torch.Tensor) -> _Batch:
        return _Batch(*(getattr(self, f.name).index_select(0, index) for f in fields(self)))


def solve_anderson(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
    max_iters: int | None = None,
    memory: int | None = None,
    hand_over_slow: bool = False,
) -> SolveResult:
    """Find roots of ``problem`` from each row of ``x0: (n, d)`` (not modified) by Anderson mixing.

    Parameters
    ----------
    problem : Problem
        Residual G; the iteration is x <- x + G(x) (x <- F(x) in discrete time).
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses ``tol_q``, ``max_iters`` and its ``anderson`` group.
    progress : callable, optional
        Called at each host synchronisation; when it raises ``TimeUp`` the running samples end
        as ``CAPPED`` at their best points.
    max_iters : int, optional
        Overrides ``options.max_iters`` (a warm-up phase before a Newton solver uses fewer).
    memory : int, optional
        Overrides ``options.anderson.memory``, the differences of iterates each sample keeps (a
        warm start keeps its own).
    hand_over_slow : bool
        End samples converging too slowly as ``CAPPED`` early (:data:`RATE_MIN_STEPS`), for a
        warm start whose caller finishes them with a faster solver.

    Returns
    -------
    SolveResult
        Each sample at its best point (smallest q among the iterates checked at host
        synchronisations); ``step_norm`` is |G| there, the length of the next plain step.
    """
    cap = options.max_iters if max_iters is None else max_iters
    memory = options.anderson.memory if memory is None else memory
    n, d = x0.shape
    out = ResultBuffers(x0)
    g = problem.residual(x0)
    q = 0.5 * (g * g).sum(-1)
    history = torch.zeros(n, memory, d, dtype=x0.dtype, device=x0.device)
    gram_dtype = torch.float64 if memory > 1 else x0.dtype  # a least-squares solve needs the precision
    batch = _Batch(  # iterates and best points are replaced, never written in place: no copies needed
        index=torch.arange(n, device=x0.device),
        x=x0,
        g=g,
        best_x=x0,
        best_g=g,
        best_q=q,
        start_q=q,
        since_best=torch.zeros(n, dtype=torch.int32, device=x0.device),
        df=history,
        dg=history.clone(),
        gram=_empty_gram(memory, gram_dtype, x0.device).repeat(n, 1, 1),
        dq=torch.full_like(q, float("nan")),
    )
    check_every = CHECK_EVERY_SINGLE if memory == 1 else CHECK_EVERY
    iteration = 0
    checks = HostChecks(progress)
    while batch.index.numel():
        steps = min(check_every, cap - iteration)  # never past the cap
        for _ in range(steps):
            _iterate(problem, batch, iteration % memory)
            iteration += 1
        _track_best(batch, steps)
        status = checks.status(iteration, batch.best_q, _status(batch, iteration, cap, options, hand_over_slow))
        running = out.retire(
            status >= 0,
            batch.index,
            iteration,
            x=batch.best_x,
            q=batch.best_q,
            dq=batch.dq,
            status=status,
            step_norm=torch.linalg.vector_norm(batch.best_g, dim=-1),
        )
        if running is not None:
            if not running.numel():
                break  # all done: no batch left to compact
            batch = batch.keep(running)
            problem = problem.subset(running)
    return out.result(iteration)


def _iterate(problem: Problem, b: _Batch, slot: int) -> None:
    """One Anderson step on every sample of ``b``, in place; the new difference goes to ``slot``."""
    if b.df.shape[1] == 1:
        _iterate_one(problem, b)
        return
    rhs = (b.dg * b.g.unsqueeze(1)).sum(-1).to(torch.float64)  # dG g, (n, memory)
    gamma = _mixing_coefficients(b.gram, rhs).to(b.g.dtype)
    step = b.g - (gamma.unsqueeze(-1) * b.df).sum(1)  # a broadcast product beats bmm on (memory, d) blocks
    x_new = b.x + step
    g_new = problem.residual(x_new)
    dg = torch.sub(g_new, b.g, out=b.dg[:, slot])
    torch.add(step, dg, out=b.df[:, slot])
    products = (b.dg * dg.unsqueeze(1)).sum(-1).to(torch.float64)
    products[:, slot].mul_(1.0 + RIDGE).add_(1e-300)  # the ridge on the diagonal
    b.gram[:, slot, :] = products
    b.gram[:, :, slot] = products
    b.x, b.g = x_new, g_new


def _iterate_one(problem: Problem, b: _Batch) -> None:
    """Anderson(1): the coefficient is one division per sample, and the single difference's
    squared length is kept in the iterates' dtype (no ridge beyond the smallest normal number,
    which makes an empty or zero difference's coefficient 0), so a step costs a few kernels."""
    dg, df, norm2 = b.dg[:, 0], b.df[:, 0], b.gram[:, 0, 0]
    gamma = (dg * b.g).sum(-1) / norm2
    step = torch.addcmul(b.g, gamma.unsqueeze(-1), df, value=-1.0)
    x_new = b.x + step
    g_new = problem.residual(x_new)
    torch.sub(g_new, b.g, out=dg)
    torch.add(step, dg, out=df)
    torch.add((dg * dg).sum(-1), torch.finfo(dg.dtype).tiny, out=norm2)
    b.x, b.g = x_new, g_new


def _track_best(b: _Batch, steps: int) -> None:
    """Record each sample's best point after ``steps`` mixing steps, and restart diverging ones.

    Run at host checks only, not every step: a mixing step is a handful of kernels on the CPU,
    and this bookkeeping as many again; the best point is the best of the checked iterates.
    """
    q = 0.5 * (b.g * b.g).sum(-1)
    improved = q < (1.0 - IMPROVEMENT) ** 2 * b.best_q
    b.since_best = torch.where(improved, 0, b.since_best + steps)
    better = q < b.best_q
    if bool(better.all()):  # every sample at a new best, as on a contracting map: nothing to select
        b.dq = b.best_q - q
        b.best_x, b.best_g, b.best_q = b.x, b.g, q  # iterates are replaced, never written in place
        return
    b.dq = torch.where(better, b.best_q - q, b.dq)
    b.best_x = torch.where(better.unsqueeze(-1), b.x, b.best_x)
    b.best_g = torch.where(better.unsqueeze(-1), b.g, b.best_g)
    b.best_q = torch.where(better, q, b.best_q)

    # Diverging (or non-finite) samples restart from their best point with an empty history.
    restart = ~(q <= GROWTH**2 * b.best_q)
    if restart.any():
        b.x = torch.where(restart.unsqueeze(-1), b.best_x, b.x)
        b.g = torch.where(restart.unsqueeze(-1), b.best_g, b.g)
        for history in (b.df, b.dg):
            history.masked_fill_(restart.view(-1, 1, 1), 0.0)
        b.gram[restart] = _empty_gram(b.gram.shape[-1], b.gram.dtype, b.gram.device)


def _empty_gram(memory: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The Gram matrix of an empty history: unit diagonal, so empty slots get zero coefficients."""
    return torch.eye(memory, dtype=dtype, device=device)


def _mixing_coefficients(gram: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Per sample, gamma minimising |g - dG^T gamma| over the history: (n, memory), float64.

    ``gram`` holds the normal equations with the ridge on its diagonal (:data:`RIDGE`); empty
    slots hold zero differences and a unit diagonal, so their gamma is 0.
    """
    chol, info = torch.linalg.cholesky_ex(gram, upper=True)  # upper: no copy to zero the other triangle
    gamma = torch.cholesky_solve(rhs.unsqueeze(-1), chol, upper=True).squeeze(-1)
    gamma = torch.where(info.unsqueeze(-1) == 0, gamma, 0.0)
    return gamma.nan_to_num_(0.0, 0.0, 0.0)  # a zero difference (0 / 0) or a failed factorisation


def _status(b: _Batch, iteration: int, cap: int, options: FinderOptions, hand_over_slow: bool) -> torch.Tensor:
    """Per-sample status code, or -1 while a sample is still running."""
    status = torch.where((b.since_best >= PATIENCE) | ~(b.best_q < math.inf), int(Status.STALLED), -1)  # NaN too
    if iteration >= cap:
        status = torch.where(status < 0, int(Status.CAPPED), status)
    elif hand_over_slow and iteration >= RATE_MIN_STEPS:
        # at its mean rate so far the sample would not reach tol_q in the steps left, or it is slow
        done_so_far = torch.log(b.start_q / b.best_q)
        still_to_go = torch.log(b.best_q / options.tol_q)
        slow = (iteration * still_to_go > (cap - iteration) * done_so_far) | (
            done_so_far < iteration * MIN_DECADES_PER_STEP * math.log(10.0)
        )
        status = torch.where((status < 0) & slow, int(Status.CAPPED), status)
    return torch.where(b.best_q < options.tol_q, int(Status.CONVERGED), status)
