"""Matrix-free Levenberg-Marquardt: damped Gauss-Newton steps by batched CGLS on Jacobian products.

Dense LM (:mod:`.lm`) converges where trust-region Newton stalls on chaotic networks, but
forms and factors n Jacobians (d, d) per step. Here each step solves the same damped least
squares problem min |J s + G|^2 + mu |s|^2 (J = dG/dx) by CGLS (conjugate gradients on the
normal equations in their stable least-squares form, Hestenes & Stiefel; Bjorck 1996), which
needs one Jacobian-vector and one vector-Jacobian product per iteration, both through the
model's passes recorded once per step (:mod:`..linalg.jacobian_products`). As in dense LM, each sample has
its own damping lambda (Nielsen's rule) scaled by mean(diag J^T J) = |J|_F^2 / d, estimated
from one random probe; CGLS runs until each sample's normal-equation residual is small
relative to its gradient, or ``cg_iters`` products (the ``lm_krylov`` options), whichever first: a truncated solve from
zero is itself a damped step (Steihaug), so a loose solve far from a root costs little.
The last few samples of a batch (:data:`DENSE_MAX_FRACTION`) take dense steps instead, where
their Jacobians fit in little memory: they are often the ones whose Jacobians are too
ill-conditioned for a short CGLS solve. So do samples close to a root in small networks
(:data:`NEAR_ROOT_RESIDUAL`), where a short solve turns Newton's quadratic convergence into a
linear crawl.

Samples first run Anderson-accelerated fixed-point iteration (:mod:`.anderson`, one model pass
a step, no Jacobian products): where F contracts around a root (networks below the edge of
chaos, GRUs) it converges there for less than one LM step costs. The samples it leaves (F
expanding: chaotic networks, saddles) start LM from their original points, since Anderson's
best points on such maps lie near minima of q that trap a descent.
"""

from __future__ import annotations

import torch

from fpf_client.options import FinderOptions

from ..base import Problem, ProgressHook, SolveResult
from ..linalg.krylov import cgls
from ..strategies.warm_start import anderson_then
from .levenberg_marquardt import DampedBatch, StepRule, levenberg_marquardt
from .lm import dense_step

#: The last few running samples of a batch take dense LM steps (as in :mod:`.lm`): often the
#: ones whose Jacobians are too ill-conditioned for ``options.lm_krylov.cg_iters`` products, which dense steps converge
#: quadratically. "Few": at most DENSE_MAX_FRACTION of the batch, with n d^2 (the Jacobians'
#: entries, 64 MiB in float32) and n d^3 (the factorisations' work) within these bounds: 256
#: samples at d = 256, 4 at d = 1024, so a dense step stays a small part of a matrix-free one.
DENSE_MAX_FRACTION = 0.25
DENSE_MAX_ENTRIES = 2**24
DENSE_MAX_WORK = 2**32
#: Samples close to a root, |G| <= NEAR_ROOT_RESIDUAL (1 + |x|), take dense LM steps in networks
#: of at most NEAR_ROOT_DENSE_MAX_STATES states (within the bounds above). There CGLS solves the
#: often ill-conditioned Newton systems only roughly and q falls about twofold per step, where
#: dense steps converge quadratically. A dense step's cost relative to a matrix-free one grows
#: with d, so beyond NEAR_ROOT_DENSE_MAX_STATES the quadratic convergence no longer pays for it.
NEAR_ROOT_RESIDUAL = 1e-3
NEAR_ROOT_DENSE_MAX_STATES = 64


def solve_lm_krylov(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
    warm_start: bool = True,
) -> SolveResult:
    """Find roots of ``problem`` from each row of ``x0: (n, d)`` (not modified).

    Parameters
    ----------
    problem : Problem
        Residual G and products with its Jacobian (no dense Jacobian is formed).
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses its ``lm_krylov`` group, ``tol_q``, ``tol_dq`` and ``max_iters`` (LM steps).
    progress : callable, optional
        Called once per step; when it raises ``TimeUp`` the running samples end as ``CAPPED``.
    warm_start : bool
        Run up to ``options.lm_krylov.warm_start_iters`` Anderson mixing steps first and LM only on
        the samples they do not converge.

    Returns
    -------
    SolveResult
        ``n_iters`` counts Anderson steps and LM steps together.
    """
    mixing_iters = options.lm_krylov.warm_start_iters
    if not warm_start or mixing_iters == 0:
        return _levenberg_marquardt(problem, x0, options, progress=progress)
    return anderson_then(
        _levenberg_marquardt, problem, x0, options, progress, mixing_iters=mixing_iters, resume_capped=False
    )


def _levenberg_marquardt(
    problem: Problem, x0: torch.Tensor, options: FinderOptions, *, progress: ProgressHook | None = None
) -> SolveResult:
    """LM with per-sample damping from each row of ``x0``, steps by CGLS (see the module docstring)."""
    generator = torch.Generator(device=x0.device).manual_seed(0)
    settings = options.lm_krylov

    def krylov_step(problem: Problem, b: DampedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        lin = problem.jacobian_products(b.x)
        probe = torch.randint(0, 2, b.x.shape, generator=generator, device=b.x.device).to(b.x.dtype) * 2 - 1
        scale = (lin.jvp(probe) ** 2).sum(-1) / b.x.shape[1]  # E |J z|^2 / d = |J|_F^2 / d for z = +-1
        mu = b.lam * scale.clamp_min(torch.finfo(b.x.dtype).tiny)
        step, model_q = cgls(lin, -b.g, mu, iters=settings.cg_iters, rtol=settings.cg_rtol)
        return step, b.q - model_q

    def step(problem: Problem, b: DampedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        dense = _dense_samples(b, len(x0))
        if dense is None:
            return krylov_step(problem, b)
        if bool(dense.all()):
            return dense_step(problem, b)
        return _split_step(problem, b, dense, dense_step, krylov_step)

    return levenberg_marquardt(problem, x0, options, progress, step, lambda_init=settings.lambda_init)


def _dense_samples(b: DampedBatch, batch_size: int) -> torch.Tensor | None:
    """Mask of the samples that take a dense step (the last few of a batch of ``batch_size``,
    samples near a root in small networks), or None when none do."""
    n, d = b.x.shape

    def fits(k: int) -> bool:
        return k * d**2 <= DENSE_MAX_ENTRIES and k * d**3 <= DENSE_MAX_WORK

    if n <= DENSE_MAX_FRACTION * batch_size and fits(n):
        return torch.ones(n, dtype=torch.bool, device=b.x.device)
    if d > NEAR_ROOT_DENSE_MAX_STATES:
        return None
    x_norm = torch.linalg.vector_norm(b.x, dim=-1)
    near = torch.linalg.vector_norm(b.g, dim=-1) <= NEAR_ROOT_RESIDUAL * (1.0 + x_norm)
    k = int(near.sum())
    return near if k and fits(k) else None


def _split_step(
    problem: Problem, b: DampedBatch, mask: torch.Tensor, on_mask: StepRule, elsewhere: StepRule
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step rule ``on_mask`` on the samples of ``mask``, ``elsewhere`` on the others."""
    step, predicted = torch.empty_like(b.x), torch.empty_like(b.q)
    for index, rule in ((torch.nonzero(mask).squeeze(-1), on_mask), (torch.nonzero(~mask).squeeze(-1), elsewhere)):
        step[index], predicted[index] = rule(problem.subset(index), b.keep(index))
    return step, predicted
