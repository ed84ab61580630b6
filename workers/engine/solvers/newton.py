"""Batched damped Newton (Levenberg-Marquardt) with exact Jacobians and per-sample damping.

Each iteration costs one batched Jacobian, one batched forward pass and one batched Cholesky
solve. Every sample has its own damping lambda: an accepted step (q decreased) divides it by
ten, a rejected one multiplies it by ten, so steps become pure Newton steps near a root
(quadratic convergence) and gradient-like steps far from one. The host is consulted only every
``CHECK_EVERY`` iterations, where finished samples leave the batch.
"""

from __future__ import annotations

import torch

from fpf_client.options import FinderOptions

from .base import Problem, ProgressHook, SolveResult, Status, time_up
from .deflation import Deflation

#: Iterations between host synchronisations (status checks, compaction, progress).
CHECK_EVERY = 2
LAMBDA_INIT = 1e-6
LAMBDA_MIN = 1e-12
#: A sample whose damping exceeds this cannot decrease q any more: it has stalled.
LAMBDA_MAX = 1e5
#: Steps shorter than STEP_TOL * (1 + |x|) that cut q by less than SLOW_DECREASE (relative),
#: STALL_PATIENCE times in a row: the sample sits at a minimum of q that is not a root.
STEP_TOL = 1e-3
SLOW_DECREASE = 1e-3
STALL_PATIENCE = 2


def solve_newton(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
    deflation: Deflation | None = None,
) -> SolveResult:
    """Find roots of ``problem`` from each row of ``x0: (n, d)`` (not modified).

    The damping follows Nielsen's rule: after an accepted step lambda is scaled by
    max(1/10, 1 - (2 rho - 1)^3) (rho: actual over predicted decrease of q), after a
    rejected one by nu, which doubles with each rejection in a row.

    Parameters
    ----------
    problem : Problem
        Residual G and its Jacobian.
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses ``tol_q``, ``tol_dq`` and ``max_iters``.
    progress : callable, optional
        Called at each host synchronisation; when it raises ``TimeUp`` the running samples end
        as ``CAPPED`` where they are.
    deflation : Deflation, optional
        Roots to steer away from; convergence is still judged on the plain q.
    """
    n, d = x0.shape
    out = _Outputs(x0)
    index = torch.arange(n, device=x0.device)
    x = x0.clone()
    g = problem.residual(x)
    q = 0.5 * (g * g).sum(-1)
    log_m = deflation.log_factor_and_grad(x)[0] if deflation is not None else torch.zeros_like(q)
    lam = torch.full_like(q, LAMBDA_INIT)
    nu = torch.full_like(q, 2.0)
    dq = torch.full_like(q, float("nan"))
    step_norm = torch.full_like(q, float("nan"))
    slow = torch.zeros(n, dtype=torch.int32, device=x0.device)
    iteration = 0
    n_converged = 0
    while index.numel():
        for _ in range(CHECK_EVERY):
            iteration += 1
            step, predicted = _lm_step(problem.jacobian(x), g, lam)
            if deflation is not None:
                step, log_m = deflation.rescale(x, step)
            x_try = x + step
            g_try = problem.residual(x_try)
            q_try = 0.5 * (g_try * g_try).sum(-1)
            if deflation is not None:
                log_m_try = deflation.log_factor_and_grad(x_try)[0]
                accept = (torch.log(q_try) + 2 * log_m_try) < (torch.log(q) + 2 * log_m)
                log_m = torch.where(accept, log_m_try, log_m)
            else:
                accept = q_try < q
            decrease = torch.where(accept, q - q_try, torch.zeros_like(q))
            step_norm = torch.linalg.vector_norm(step, dim=-1)
            short = step_norm < STEP_TOL * (1.0 + torch.linalg.vector_norm(x, dim=-1))
            slow = torch.where((decrease < SLOW_DECREASE * q) & short, slow + 1, torch.zeros_like(slow))
            rho = decrease / predicted.clamp_min(torch.finfo(q.dtype).tiny)
            shrink = (1.0 - (2.0 * rho - 1.0) ** 3).clamp(0.1, 2.0)
            lam = torch.where(accept, (lam * shrink).clamp_min(LAMBDA_MIN), lam * nu)
            nu = torch.where(accept, torch.full_like(nu, 2.0), nu * 2.0)
            dq = torch.where(accept, decrease, dq)
            x = torch.where(accept.unsqueeze(-1), x_try, x)
            g = torch.where(accept.unsqueeze(-1), g_try, g)
            q = torch.where(accept, q_try, q)
        status = _status(q, lam, slow, dq, iteration, options)
        n_converged += int((status == Status.CONVERGED).sum())
        if time_up(progress, iteration, q, n_converged):
            status = torch.where(status < 0, int(Status.CAPPED), status)
        done = status >= 0
        if done.any():
            out.write(index[done], x[done], q[done], dq[done], iteration, status[done], step_norm[done])
            keep = ~done
            index, x, g, q, lam, nu, dq, step_norm, slow, log_m = (
                t[keep] for t in (index, x, g, q, lam, nu, dq, step_norm, slow, log_m)
            )
            problem = problem.subset(keep)
            if deflation is not None:
                deflation = deflation.subset(keep)
    return out.result(iteration)


def _lm_step(jac: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve (J^T J + lam * mean(diag J^T J) I) step = -J^T g; also the decrease of q it predicts."""
    jt = jac.mT
    a = jt @ jac
    diag = a.diagonal(dim1=-2, dim2=-1)
    damping = lam * diag.mean(-1).clamp_min(torch.finfo(a.dtype).tiny)
    diag.add_(damping.unsqueeze(-1))
    grad = (jt @ g.unsqueeze(-1)).squeeze(-1)
    chol, _ = torch.linalg.cholesky_ex(a)
    step = -torch.cholesky_solve(grad.unsqueeze(-1), chol).squeeze(-1)
    predicted = 0.5 * (step * (damping.unsqueeze(-1) * step - grad)).sum(-1)
    return step, predicted


def _status(
    q: torch.Tensor, lam: torch.Tensor, slow: torch.Tensor, dq: torch.Tensor, iteration: int, options: FinderOptions
) -> torch.Tensor:
    """Per-sample status code, or -1 while a sample is still running."""
    running = torch.full(q.shape, -1, dtype=torch.int64, device=q.device)
    stalled = (lam > LAMBDA_MAX) | (slow >= STALL_PATIENCE) | (dq < options.tol_dq) | ~torch.isfinite(q)
    status = torch.where(stalled, torch.full_like(running, Status.STALLED), running)
    if iteration >= options.max_iters:
        status = torch.where(status < 0, torch.full_like(running, Status.CAPPED), status)
    return torch.where(q < options.tol_q, torch.full_like(running, Status.CONVERGED), status)


class _Outputs:
    """Result buffers that finished samples are written into as they leave the batch."""

    def __init__(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        self.x = torch.empty_like(x)
        self.q = torch.empty(n, dtype=x.dtype, device=x.device)
        self.dq = torch.empty_like(self.q)
        self.step_norm = torch.empty_like(self.q)
        self.n_iters = torch.empty(n, dtype=torch.int64, device=x.device)
        self.status = torch.empty(n, dtype=torch.int64, device=x.device)

    def write(
        self,
        index: torch.Tensor,
        x: torch.Tensor,
        q: torch.Tensor,
        dq: torch.Tensor,
        iteration: int,
        status: torch.Tensor,
        step_norm: torch.Tensor,
    ) -> None:
        self.x[index] = x
        self.q[index] = q
        self.dq[index] = dq
        self.n_iters[index] = iteration
        self.status[index] = status
        self.step_norm[index] = step_norm

    def result(self, iterations: int) -> SolveResult:
        return SolveResult(
            x=self.x, q=self.q, dq=self.dq, n_iters=self.n_iters, status=self.status,
            step_norm=self.step_norm, iterations=iterations,
        )
