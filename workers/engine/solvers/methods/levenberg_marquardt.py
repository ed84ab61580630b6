"""The Levenberg-Marquardt iteration shared by the dense and the matrix-free solver.

Each sample has its own damping lambda, updated by Nielsen's rule: after an accepted step it is
scaled by max(1/10, 1 - (2 rho - 1)^3) (rho: actual over predicted decrease of q), after a
rejected one by nu, which doubles with each rejection in a row. A solver supplies only its
:data:`StepRule`, how the damped step is computed (dense Cholesky, or CGLS on Jacobian products);
acceptance, stall detection and dropping finished samples from the batch are the same for both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from fpf_client.options import FinderOptions

from ..base import HostChecks, Problem, ProgressHook, ResultBuffers, SolveResult, Status

LAMBDA_MIN = 1e-12
#: A sample whose damping exceeds this cannot decrease q any more: it has stalled.
LAMBDA_MAX = 1e5
#: Steps shorter than STEP_TOL * (1 + |x|) that cut q by less than SLOW_DECREASE (relative),
#: STALL_PATIENCE times in a row: the sample sits at a minimum of q that is not a root.
STEP_TOL = 1e-3
SLOW_DECREASE = 1e-3
STALL_PATIENCE = 2
#: A sample whose q has not fallen by CRAWL_FACTOR over the last CRAWL_WINDOW iterations stops as
#: stalled: it crawls along a valley of q, as samples of chaotic networks do for thousands of
#: steps without reaching a root, while samples that converge halve q far more often than this.
CRAWL_WINDOW = 25
CRAWL_FACTOR = 2.0


@dataclass
class DampedBatch:
    """The running samples: where they are and each one's damping state."""

    index: torch.Tensor  #: position in the caller's batch
    x: torch.Tensor
    g: torch.Tensor  #: G(x)
    q: torch.Tensor
    lam: torch.Tensor
    nu: torch.Tensor  #: growth factor of lam after a rejected step (Nielsen)
    dq: torch.Tensor
    step_norm: torch.Tensor
    slow: torch.Tensor  #: short, unproductive steps in a row
    anchor_q: torch.Tensor  #: q at the start of the current crawl window
    crawling: torch.Tensor  #: q fell by less than CRAWL_FACTOR over the last window

    def keep(self, index: torch.Tensor) -> DampedBatch:
        return DampedBatch(*(getattr(self, f.name).index_select(0, index) for f in fields(self)))


#: The damped step of every sample of the batch, and the decrease of q its linear model predicts.
StepRule = Callable[[Problem, DampedBatch], tuple[torch.Tensor, torch.Tensor]]


def levenberg_marquardt(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    progress: ProgressHook | None,
    step_rule: StepRule,
    *,
    lambda_init: float,
    check_every: int = 1,
) -> SolveResult:
    """Damped steps from each row of ``x0: (n, d)`` (not modified) until each sample ends.

    Parameters
    ----------
    options : FinderOptions
        Uses ``tol_q``, ``tol_dq`` and ``max_iters``.
    progress : callable, optional
        Called at each host synchronisation; when it raises ``TimeUp`` the running samples end
        as ``CAPPED`` where they are.
    step_rule : StepRule
        How the damped step is computed.
    lambda_init : float
        Every sample's first damping, relative to the scale of J^T J.
    check_every : int
        Iterations between host synchronisations (status, compaction, progress).
    """
    n = x0.shape[0]
    out = ResultBuffers(x0)
    g = problem.residual(x0)
    q = 0.5 * (g * g).sum(-1)
    nan = torch.full_like(q, float("nan"))
    batch = DampedBatch(
        index=torch.arange(n, device=x0.device),
        x=x0.clone(),
        g=g,
        q=q,
        lam=torch.full_like(q, lambda_init),
        nu=torch.full_like(q, 2.0),
        dq=nan,
        step_norm=nan.clone(),
        slow=torch.zeros(n, dtype=torch.int32, device=x0.device),
        anchor_q=q,
        crawling=torch.zeros(n, dtype=torch.bool, device=x0.device),
    )
    iteration = 0
    checks = HostChecks(progress)
    while batch.index.numel():
        for _ in range(min(check_every, options.max_iters - iteration)):  # never past the cap
            iteration += 1
            _iterate(problem, batch, step_rule)
            if iteration % CRAWL_WINDOW == 0:
                batch.crawling = batch.q > batch.anchor_q / CRAWL_FACTOR
                batch.anchor_q = batch.q  # q is replaced, never updated in place
        status = checks.status(iteration, batch.q, _status(batch, iteration, options))
        running = out.retire(
            status >= 0,
            batch.index,
            iteration,
            x=batch.x,
            q=batch.q,
            dq=batch.dq,
            status=status,
            step_norm=batch.step_norm,
        )
        if running is not None:
            if not running.numel():
                break  # all done: no batch left to compact
            batch = batch.keep(running)
            problem = problem.subset(running)
    return out.result(iteration)


def _iterate(problem: Problem, b: DampedBatch, step_rule: StepRule) -> None:
    """One damped step on every sample of ``b``, kept where it lowers q; in place."""
    step, predicted = step_rule(problem, b)
    x_try = b.x + step
    g_try = problem.residual(x_try)
    q_try = 0.5 * (g_try * g_try).sum(-1)
    accept = q_try < b.q
    decrease = torch.where(accept, b.q - q_try, 0.0)
    b.step_norm = torch.linalg.vector_norm(step, dim=-1)
    short = b.step_norm < STEP_TOL * (1.0 + torch.linalg.vector_norm(b.x, dim=-1))
    b.slow = torch.where((decrease < SLOW_DECREASE * b.q) & short, b.slow + 1, 0)
    rho = decrease / predicted.clamp_min(torch.finfo(b.q.dtype).tiny)
    shrink = (1.0 - (2.0 * rho - 1.0) ** 3).clamp(0.1, 2.0)
    b.lam = torch.where(accept, (b.lam * shrink).clamp_min(LAMBDA_MIN), b.lam * b.nu)
    b.nu = torch.where(accept, 2.0, b.nu * 2.0)
    b.dq = torch.where(accept, decrease, b.dq)
    b.x = torch.where(accept.unsqueeze(-1), x_try, b.x)
    b.g = torch.where(accept.unsqueeze(-1), g_try, b.g)
    b.q = torch.where(accept, q_try, b.q)


def _status(b: DampedBatch, iteration: int, options: FinderOptions) -> torch.Tensor:
    """Per-sample status code, or -1 while a sample is still running."""
    stalled = (b.lam > LAMBDA_MAX) | (b.slow >= STALL_PATIENCE) | (b.dq < options.tol_dq) | ~(b.q < math.inf)  # NaN too
    stalled |= b.crawling
    status = torch.where(stalled, int(Status.STALLED), -1)
    if iteration >= options.max_iters:
        status = torch.where(status < 0, int(Status.CAPPED), status)
    return torch.where(b.q < options.tol_q, int(Status.CONVERGED), status)
