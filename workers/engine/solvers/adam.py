"""The reference's method: joint Adam on the mean of q, learning rate reduced on plateau.

Reproduces FixedPointFinderTorch (Golub & Sussillo): ``torch.optim.Adam`` on all states at
once, minimising mean(q) with q = 0.5 * |F(x) - x|^2 (|f(x)|^2 for continuous time),
``ReduceLROnPlateau`` driven by mean(q), and a stop once every sample has q < tol_q or
|dq| < tol_dq * learning rate, or after max_iters. Unlike the reference it honours the
learning-rate options, never writes into the caller's array, and returns the states q was
evaluated at (the reference returns the states after one more step, with the older q).
"""

from __future__ import annotations

import torch

from fpf_client.options import FinderOptions

from .base import Problem, ProgressHook, SolveResult, Status, time_up

#: Iterations between progress reports (the stop test syncs every iteration, as the reference does).
REPORT_EVERY = 20


def solve_adam(
    problem: Problem, x0: torch.Tensor, options: FinderOptions, *, progress: ProgressHook | None = None
) -> SolveResult:
    """Minimise q jointly from each row of ``x0: (n, d)`` (not modified).

    Parameters
    ----------
    problem : Problem
        Residual G.
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses ``lr_init``, ``lr_factor``, ``lr_patience``, ``lr_cooldown``, ``tol_q``, ``tol_dq``
        and ``max_iters``.
    progress : callable, optional
        Called every ``REPORT_EVERY`` iterations; when it raises ``TimeUp`` the states stop where they are.
    """
    x = x0.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([x], lr=options.lr_init)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=options.lr_factor, patience=options.lr_patience,
        cooldown=options.lr_cooldown,
    )
    u = problem.inputs.expand(x.shape[0], -1) if problem.inputs.shape[0] == 1 else problem.inputs
    q_prev = torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device)
    iteration = 0
    with torch.enable_grad():
        while True:
            iteration += 1
            x_evaluated = x.detach().clone()
            fx = problem.model.step(x, u)
            g = fx - x if problem.dynamics == "discrete" else fx
            q = 0.5 * (g * g).sum(-1)
            q_mean = q.mean()
            dq = (q - q_prev).abs().detach()
            optimizer.zero_grad()
            q_mean.backward()
            optimizer.step()
            scheduler.step(q_mean.item())
            lr = scheduler.get_last_lr()[0]
            q = q.detach()
            if iteration % REPORT_EVERY == 0 and time_up(progress, iteration, q, int((q < options.tol_q).sum())):
                break
            finished = (dq < options.tol_dq * lr) | (q < options.tol_q)
            if (iteration > 1 and bool(finished.all())) or iteration >= options.max_iters:
                break
            q_prev = q
    x, q_final = x_evaluated, q
    status = torch.where(
        q_final < options.tol_q,
        torch.tensor(int(Status.CONVERGED), device=x.device),
        torch.where(dq < options.tol_dq * lr, torch.tensor(int(Status.STALLED), device=x.device),
                    torch.tensor(int(Status.CAPPED), device=x.device)),
    )
    n = x.shape[0]
    return SolveResult(
        x=x, q=q_final, dq=dq, n_iters=torch.full((n,), iteration, dtype=torch.int64, device=x.device),
        status=status, step_norm=torch.full((n,), float("nan"), dtype=x.dtype, device=x.device),
        iterations=iteration,
    )
