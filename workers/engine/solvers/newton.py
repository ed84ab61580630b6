"""Batched damped Newton (Levenberg-Marquardt) with exact Jacobians and per-sample damping.

Each iteration costs one batched Jacobian, one batched forward pass and one batched Cholesky
solve. Every sample has its own damping lambda, so steps are pure Newton steps near a root
(quadratic convergence) and gradient-like steps far from one. Finished samples leave the
batch at each host check: every iteration on the CPU, where checking is free, every
``GPU_CHECK_EVERY`` iterations on a GPU, where it waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from fpf_client.options import FinderOptions

from .base import Problem, ProgressHook, ResultBuffers, SolveResult, Status, time_up

#: Iterations between host synchronisations (status checks, compaction, progress) on a GPU.
GPU_CHECK_EVERY = 2
LAMBDA_INIT = 1e-6
LAMBDA_MIN = 1e-12
#: A sample whose damping exceeds this cannot decrease q any more: it has stalled.
LAMBDA_MAX = 1e5
#: Steps shorter than STEP_TOL * (1 + |x|) that cut q by less than SLOW_DECREASE (relative),
#: STALL_PATIENCE times in a row: the sample sits at a minimum of q that is not a root.
STEP_TOL = 1e-3
SLOW_DECREASE = 1e-3
STALL_PATIENCE = 2


@dataclass
class _Batch:
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

    def keep(self, mask: torch.Tensor) -> "_Batch":
        return _Batch(*(getattr(self, f.name)[mask] for f in fields(self)))


def solve_newton(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
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
    """
    n = x0.shape[0]
    out = ResultBuffers(x0)
    g = problem.residual(x0)
    q = 0.5 * (g * g).sum(-1)
    nan = torch.full_like(q, float("nan"))
    batch = _Batch(
        index=torch.arange(n, device=x0.device), x=x0.clone(), g=g, q=q, lam=torch.full_like(q, LAMBDA_INIT),
        nu=torch.full_like(q, 2.0), dq=nan, step_norm=nan.clone(),
        slow=torch.zeros(n, dtype=torch.int32, device=x0.device),
    )
    check_every = GPU_CHECK_EVERY if x0.device.type == "cuda" else 1
    iteration = 0
    n_converged = 0
    while batch.index.numel():
        for _ in range(check_every):
            iteration += 1
            _iterate(problem, batch)
        status = _status(batch, iteration, options)
        n_converged += int((status == Status.CONVERGED).sum())
        if time_up(progress, iteration, batch.q, n_converged):
            status = torch.where(status < 0, int(Status.CAPPED), status)
        done = status >= 0
        if done.any():
            out.write(
                batch.index[done], iteration, x=batch.x[done], q=batch.q[done], dq=batch.dq[done],
                status=status[done], step_norm=batch.step_norm[done],
            )
            keep = ~done
            batch = batch.keep(keep)
            problem = problem.subset(keep)
    return out.result(iteration)


def _iterate(problem: Problem, b: _Batch) -> None:
    """One LM iteration on every sample of ``b``, in place."""
    step, predicted = _lm_step(problem.jacobian(b.x), b.g, b.lam)
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


def _lm_step(jac: torch.Tensor, g: torch.Tensor, lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve (J^T J + lam * mean(diag J^T J) I) step = -J^T g; also the decrease of q it predicts."""
    a = jac.mT @ jac
    diag = a.diagonal(dim1=-2, dim2=-1)
    damping = lam * diag.mean(-1).clamp_min(torch.finfo(a.dtype).tiny)
    diag.add_(damping.unsqueeze(-1))
    grad = (jac * g.unsqueeze(-1)).sum(1)  # J^T g; a broadcast product beats a batched matrix-vector
    chol, _ = torch.linalg.cholesky_ex(a, upper=True)  # upper: no copy to zero the other triangle
    step = -torch.cholesky_solve(grad.unsqueeze(-1), chol, upper=True).squeeze(-1)
    predicted = 0.5 * (step * (damping.unsqueeze(-1) * step - grad)).sum(-1)
    return step, predicted


def _status(b: _Batch, iteration: int, options: FinderOptions) -> torch.Tensor:
    """Per-sample status code, or -1 while a sample is still running."""
    stalled = (b.lam > LAMBDA_MAX) | (b.slow >= STALL_PATIENCE) | (b.dq < options.tol_dq) | ~torch.isfinite(b.q)
    status = torch.where(stalled, int(Status.STALLED), -1)
    if iteration >= options.max_iters:
        status = torch.where(status < 0, int(Status.CAPPED), status)
    return torch.where(b.q < options.tol_q, int(Status.CONVERGED), status)
