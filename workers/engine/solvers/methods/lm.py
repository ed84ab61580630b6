"""Batched damped Newton (Levenberg-Marquardt) with exact Jacobians and per-sample damping.

Samples first take a few Anderson mixing steps (:mod:`..strategies.warm_start`: one forward pass each, no
Jacobian): on trained networks most samples converge there or come close enough for Newton's
quadratic convergence, so far fewer dense Jacobians are factored. Each Newton iteration costs
one batched Jacobian, one batched forward pass and one batched Cholesky solve. Every sample
has its own damping lambda, so steps are pure Newton steps near a root (quadratic
convergence) and gradient-like steps far from one. Finished samples leave the
batch at each host check: every iteration on the CPU, where checking is free, every
``GPU_CHECK_EVERY`` iterations on a GPU, where it waits for the device.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from fpf_client.options import FinderOptions

from ..base import Problem, ProgressHook, SolveResult
from ..strategies.warm_start import MEMORY, Handover, anderson_then, mix
from .levenberg_marquardt import DampedBatch, levenberg_marquardt

#: Iterations between host synchronisations (status checks, compaction, progress) on a GPU.
GPU_CHECK_EVERY = 2
#: By default (``options.lm.warm_start_iters`` None), networks with up to SMALL_MAX_STATES states
#: mix for at most MIXING_ITERS steps with a single
#: difference (Anderson(1): a division per sample instead of a batched factorisation). There a
#: Newton step costs a few forward passes and the least-squares solve of a longer memory costs
#: more than the forward pass, while longer memories converge no faster; MIXING_ITERS steps
#: converge most states and leave the rest within a few Newton steps of a root
#: (benchmarks/engine_vs_adam.py).
MIXING_ITERS = 20
SMALL_MAX_STATES = 32
#: Larger networks mix for up to LONG_MIXING_ITERS steps (by default) with
#: :data:`..strategies.warm_start.MEMORY` differences, and samples converging too slowly leave
#: early for LM (``hand_over_slow``): there a dense step costs on the order of d forward passes,
#: more than the mixing steps a contracting network needs.
LONG_MIXING_ITERS = 300


def solve_lm(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
    warm_start: bool = True,
) -> SolveResult:
    """Find roots of ``problem`` from each row of ``x0: (n, d)`` (not modified).

    Damping, acceptance and stalls are :mod:`.levenberg_marquardt`'s; each step is solved
    densely from the exact Jacobian.

    Parameters
    ----------
    problem : Problem
        Residual G and its Jacobian.
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses its ``lm`` group, ``tol_q``, ``tol_dq`` and ``max_iters``.
    progress : callable, optional
        Called at each host synchronisation; when it raises ``TimeUp`` the running samples end
        as ``CAPPED`` where they are.
    warm_start : bool
        Take up to ``options.lm.warm_start_iters`` (by default ``MIXING_ITERS``, ``LONG_MIXING_ITERS``
        above ``SMALL_MAX_STATES`` states) Anderson steps first (:func:`.warm_start.anderson_then`), at
        most half of ``options.max_iters``, which counts the steps of both.
    """
    settings = _warm_start(options, x0.shape[1]) if warm_start else None
    if settings is not None:
        return anderson_then(partial(solve_lm, warm_start=False), problem, x0, options, progress, **settings)
    check_every = GPU_CHECK_EVERY if x0.device.type == "cuda" else 1
    return levenberg_marquardt(
        problem, x0, options, progress, dense_step, lambda_init=options.lm.lambda_init, check_every=check_every
    )


def mix_before_lm(
    problem: Problem, x0: torch.Tensor, options: FinderOptions, *, progress: ProgressHook | None = None
) -> tuple[SolveResult, Handover | None] | None:
    """The warm start of :func:`solve_lm` alone: the mixing's outcome and what it leaves to LM
    (:func:`.warm_start.mix`), for a caller that runs LM on those samples later, together with
    others; None when ``options`` ask for no warm start."""
    settings = _warm_start(options, x0.shape[1])
    if settings is None:
        return None
    return mix(problem, x0, options, progress, **settings)


def _warm_start(options: FinderOptions, n_states: int) -> dict[str, Any] | None:
    """The Anderson warm start's settings for a network of ``n_states`` (None: no warm start)."""
    small = n_states <= SMALL_MAX_STATES
    wanted = options.lm.warm_start_iters
    if wanted is None:
        wanted = MIXING_ITERS if small else LONG_MIXING_ITERS
    mixing_iters = min(wanted, options.max_iters // 2)  # Newton gets half
    if mixing_iters <= 0:
        return None
    return {
        "mixing_iters": mixing_iters,
        "resume_capped": True,
        "memory": 1 if small else MEMORY,
        "hand_over_slow": not small,
    }


def dense_step(problem: Problem, b: DampedBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The damped step of every sample from its dense Jacobian, and the decrease of q it predicts."""
    return _lm_step(problem.jacobian(b.x), b.g, b.lam)


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
