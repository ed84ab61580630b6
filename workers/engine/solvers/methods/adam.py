"""The reference's method: joint Adam on the mean of q, learning rate reduced on plateau.

Reproduces FixedPointFinderTorch (Golub & Sussillo): ``torch.optim.Adam`` on all states at
once, minimising mean(q) with q = 0.5 * |F(x) - x|^2 (|f(x)|^2 for continuous time),
``ReduceLROnPlateau`` driven by mean(q), and a stop once every sample has q < tol_q or
|dq| < tol_dq * learning rate, or after max_iters. Unlike the reference it honours the
learning-rate options, never writes into the caller's array, and returns the states q was
evaluated at (the reference returns the states after one more step, with the older q).
Its options are the ``adam`` group: the reference's ``lr_*`` and the TF reference's controls,
``hps`` (its ``adam_hps``: betas, epsilon), ``alr_hps`` (its adaptive learning rate, replacing
reduce-on-plateau) and ``agnc_hps`` (adaptive clipping of the gradient's global norm over the
batch), see :mod:`..strategies.adaptive`.
"""

from __future__ import annotations

import torch

from fpf_client.options import AdamOptions, FinderOptions

from ..base import Problem, ProgressHook, SolveResult, Status, time_up
from ..strategies.adaptive import GradNormClip, LearningRateSchedule

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
        Uses its ``adam`` group, ``tol_q``, ``tol_dq`` and ``max_iters``.
    progress : callable, optional
        Called every ``REPORT_EVERY`` iterations; when it raises ``TimeUp`` the states stop where they are.
    """
    x = x0.detach().clone().requires_grad_(True)
    adam = options.adam
    optimizer = torch.optim.Adam([x], lr=adam.lr_init, betas=(adam.hps.beta1, adam.hps.beta2), eps=adam.hps.epsilon)
    schedule = _Schedule(optimizer, adam)
    clip = GradNormClip(adam.agnc_hps) if adam.agnc_hps is not None else None
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
            grad_norm = _clip_gradient(x, clip.value) if clip is not None else None
            optimizer.step()
            lr = schedule.update(q_mean.item())
            if clip is not None:
                clip.update(grad_norm)
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
        torch.where(
            dq < options.tol_dq * lr,
            torch.tensor(int(Status.STALLED), device=x.device),
            torch.tensor(int(Status.CAPPED), device=x.device),
        ),
    )
    n = x.shape[0]
    return SolveResult(
        x=x,
        q=q_final,
        dq=dq,
        n_iters=torch.full((n,), iteration, dtype=torch.int64, device=x.device),
        status=status,
        step_norm=torch.full((n,), float("nan"), dtype=x.dtype, device=x.device),
        iterations=iteration,
    )


class _Schedule:
    """The learning rate of each iteration: reduce-on-plateau on mean q, or the TF reference's
    adaptive schedule when ``alr_hps`` is set."""

    def __init__(self, optimizer: torch.optim.Adam, options: AdamOptions) -> None:
        self.optimizer = optimizer
        if options.alr_hps is not None:
            self.adaptive: LearningRateSchedule | None = LearningRateSchedule(options.alr_hps, options.lr_init)
            self._set(self.adaptive.rate)
        else:
            self.adaptive = None
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min",
                factor=options.lr_factor,
                patience=options.lr_patience,
                cooldown=options.lr_cooldown,
            )

    @property
    def rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def update(self, q_mean: float) -> float:
        """Set the rate of the next iteration from the mean q just evaluated, and return the rate
        the stop test scales tol_dq by: the new one after a plateau step (as the torch reference
        does), the one this step used with the adaptive schedule (as the TF reference does)."""
        if self.adaptive is not None:
            used = self.rate
            self._set(self.adaptive.update(q_mean))
            return used
        self.plateau.step(q_mean)
        return self.rate

    def _set(self, rate: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = rate


def _clip_gradient(x: torch.Tensor, clip_value: float) -> float:
    """Scale ``x.grad`` in place to a global norm of at most ``clip_value``; return its norm before."""
    norm = float(torch.linalg.vector_norm(x.grad))
    if norm > clip_value:
        x.grad.mul_(clip_value / norm)
    return norm
