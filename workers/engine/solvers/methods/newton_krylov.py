"""Matrix-free inexact Newton: Newton steps by batched GMRES on Jacobian-vector products.

Dense Newton forms n Jacobians (d, d) and factors them, O(n d^3) per step; here a step costs
a few dozen batched Jacobian-vector products, O(n d^2) for a dense recurrent layer, and
memory O(n d k) for a Krylov basis of k vectors. Each step solves dG/dx p = -G only as
accurately as it pays (Eisenstat-Walker forcing terms: loosely far from a root, tightly near
one, never beyond tol_q), by GMRES cycles of a small basis (the ``newton_krylov`` options): small
bases are cheap to orthogonalise, and restarting costs little for the disk-like spectra of random
recurrent weights. Globalisation is Powell's dogleg in a per-sample trust region, as
in Brown & Saad's hybrid Krylov methods (1990): the step runs from the Cauchy point (the
steepest descent minimiser of the linear model, one vjp and one jvp) towards the Newton
step, so far from a root, where the Jacobian is near singular, steps are gradient-like and
a sample keeps decreasing q where a line search along Newton steps would stop (as
Levenberg-Marquardt does in dense Newton). A rejected step only shrinks the region: its
Newton and Cauchy steps are reused, so GMRES runs for moved samples only. The host is
consulted once per step, where finished samples leave the batch.
"""

from __future__ import annotations

import math

import torch

from fpf_client.options import FinderOptions, NewtonKrylovOptions

from ..base import HostChecks, Problem, ProgressHook, ResultBuffers, SolveResult, Status
from ..linalg.krylov import gmres
from .levenberg_marquardt import SLOW_DECREASE, STALL_PATIENCE, STEP_TOL

#: Eisenstat-Walker "choice 2": eta_k = GAMMA * (|G_k| / |G_k-1|)^2, within [eta_floor, ETA_MAX].
ETA_INIT = 0.5
ETA_MAX = 0.5
GAMMA = 0.9
#: Trust region: accept when actual/predicted decrease of q exceeds ACCEPT; shrink below
#: SHRINK_BELOW, grow (doubling) above GROW_ABOVE when the step touched the boundary.
ACCEPT = 1e-4
SHRINK_BELOW = 0.25
GROW_ABOVE = 0.75
#: A trust radius below this many float epsilons times (1 + |x|) cannot move x: stalled.
RADIUS_EPS = 10.0


def solve_newton_krylov(
    problem: Problem,
    x0: torch.Tensor,
    options: FinderOptions,
    *,
    progress: ProgressHook | None = None,
) -> SolveResult:
    """Find roots of ``problem`` from each row of ``x0: (n, d)`` (not modified).

    Parameters
    ----------
    problem : Problem
        Residual G and products with its Jacobian (no dense Jacobian is formed).
    x0 : Tensor, (n, d)
        Starting points.
    options : FinderOptions
        Uses its ``newton_krylov`` group (GMRES's basis size and restarts), ``tol_q``, ``tol_dq``
        and ``max_iters`` (Newton steps).
    progress : callable, optional
        Called once per Newton step, where the host checks the batch anyway; when it raises
        ``TimeUp`` the running samples end as ``CAPPED`` where they are.
    """
    out = ResultBuffers(x0)
    tiny = torch.finfo(x0.dtype).tiny
    target = math.sqrt(2.0 * options.tol_q)
    eta_floor = 100.0 * torch.finfo(x0.dtype).eps
    s = _State.start(problem, x0)
    iteration = 0
    checks = HostChecks(progress)
    while s.index.numel():
        iteration += 1
        fresh = torch.nonzero(s.fresh).squeeze(-1)
        if fresh.numel():
            _directions(problem.subset(fresh), s, fresh, options.newton_krylov)
        step, jstep = _dogleg(s, tiny)
        x_try = s.x + step
        g_try = problem.residual(x_try)
        q_try = 0.5 * (g_try * g_try).sum(-1)
        predicted = s.q - 0.5 * ((s.g + jstep) ** 2).sum(-1)
        ratio = (s.q - q_try) / predicted.clamp_min(tiny)
        accept = (ratio > ACCEPT) & torch.isfinite(q_try)
        relative_decrease = 1.0 - q_try / s.q
        step_len = torch.linalg.vector_norm(step, dim=-1)
        s.radius = torch.where(
            ratio < SHRINK_BELOW,
            SHRINK_BELOW * step_len,
            torch.where((ratio > GROW_ABOVE) & (step_len >= 0.99 * s.radius), 2.0 * s.radius, s.radius),
        )
        x_norm = torch.linalg.vector_norm(s.x, dim=-1)
        short = step_len < STEP_TOL * (1.0 + x_norm)
        s.slow = torch.where(accept & (relative_decrease < SLOW_DECREASE) & short, s.slow + 1, torch.zeros_like(s.slow))
        s.dq = torch.where(accept, (s.q - q_try).abs(), s.dq)
        s.eta = torch.where(accept, _forcing(s.eta, s.q.sqrt(), q_try.sqrt(), target, eta_floor), s.eta)
        s.x = torch.where(accept.unsqueeze(-1), x_try, s.x)
        s.g = torch.where(accept.unsqueeze(-1), g_try, s.g)
        s.q = torch.where(accept, q_try, s.q)
        s.fresh = accept

        floor = RADIUS_EPS * torch.finfo(x0.dtype).eps * (1.0 + x_norm)
        status = checks.status(iteration, s.q, _status(s.q, s.radius < floor, s.slow, s.dq, iteration, options))
        running = out.retire(
            status >= 0, s.index, iteration, x=s.x, q=s.q, dq=s.dq, status=status, step_norm=s.newton_norm
        )
        if running is not None:
            if not running.numel():
                break  # all done: no batch left to compact
            s.select(running)
            problem = problem.subset(running)
    return out.result(iteration)


class _State:
    """Per-sample iterate, trust radius and cached step directions of the running samples."""

    index: torch.Tensor
    x: torch.Tensor
    g: torch.Tensor
    q: torch.Tensor
    radius: torch.Tensor
    eta: torch.Tensor
    dq: torch.Tensor
    slow: torch.Tensor
    fresh: torch.Tensor
    newton: torch.Tensor
    j_newton: torch.Tensor
    newton_norm: torch.Tensor
    cauchy: torch.Tensor
    j_cauchy: torch.Tensor

    @classmethod
    def start(cls, problem: Problem, x0: torch.Tensor) -> _State:
        s = cls()
        n = x0.shape[0]
        s.index = torch.arange(n, device=x0.device)
        s.x = x0.clone()
        s.g = problem.residual(s.x)
        s.q = 0.5 * (s.g * s.g).sum(-1)
        s.radius = torch.full_like(s.q, float("inf"))  # the first step is a full Newton step
        s.eta = torch.full_like(s.q, ETA_INIT)
        s.dq = torch.full_like(s.q, float("nan"))
        s.slow = torch.zeros(n, dtype=torch.int32, device=x0.device)
        s.fresh = torch.ones(n, dtype=torch.bool, device=x0.device)
        s.newton, s.j_newton, s.cauchy, s.j_cauchy = (torch.zeros_like(s.x) for _ in range(4))
        s.newton_norm = torch.full_like(s.q, float("nan"))
        return s

    def select(self, keep: torch.Tensor) -> None:
        for name in self.__annotations__:
            setattr(self, name, getattr(self, name)[keep])


def _directions(problem: Problem, s: _State, rows: torch.Tensor, settings: NewtonKrylovOptions) -> None:
    """Newton step (GMRES), Cauchy step and their images under dG/dx for the samples ``rows``."""
    lin = problem.jacobian_products(s.x[rows])
    g = s.g[rows]
    krylov = gmres(lin.jvp, -g, s.eta[rows], restart=settings.gmres_restart, max_restarts=settings.gmres_max_restarts)
    newton = krylov.x
    j_newton = lin.jvp(newton)
    s.newton_norm[rows] = torch.linalg.vector_norm(newton, dim=-1)
    gradient = lin.vjp(g)  # grad q = dG/dx^T G
    j_gradient = lin.jvp(gradient)
    length = (gradient * gradient).sum(-1) / (j_gradient * j_gradient).sum(-1).clamp_min(torch.finfo(g.dtype).tiny)
    s.newton[rows], s.j_newton[rows] = newton, j_newton
    s.cauchy[rows], s.j_cauchy[rows] = -length.unsqueeze(-1) * gradient, -length.unsqueeze(-1) * j_gradient


def _dogleg(s: _State, tiny: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's dogleg step within its trust radius, and its image under dG/dx."""
    newton_len = torch.linalg.vector_norm(s.newton, dim=-1)
    cauchy_len = torch.linalg.vector_norm(s.cauchy, dim=-1)
    radius = torch.minimum(s.radius, newton_len)
    # Where the segment from the Cauchy point to the Newton step leaves the region.
    leg = s.newton - s.cauchy
    a = (leg * leg).sum(-1).clamp_min(tiny)
    b = 2.0 * (s.cauchy * leg).sum(-1)
    c = cauchy_len**2 - radius**2
    tau = ((-b + (b * b - 4.0 * a * c).clamp_min(0.0).sqrt()) / (2.0 * a)).clamp(0.0, 1.0)
    shrink = (radius / cauchy_len.clamp_min(tiny)).clamp_max(1.0)
    use_newton = (newton_len <= s.radius).unsqueeze(-1)
    use_cauchy = (cauchy_len >= radius).unsqueeze(-1)
    tau, shrink = tau.unsqueeze(-1), shrink.unsqueeze(-1)
    step = torch.where(use_newton, s.newton, torch.where(use_cauchy, shrink * s.cauchy, s.cauchy + tau * leg))
    image = torch.where(
        use_newton,
        s.j_newton,
        torch.where(use_cauchy, shrink * s.j_cauchy, s.j_cauchy + tau * (s.j_newton - s.j_cauchy)),
    )
    return step, image


def _forcing(
    eta: torch.Tensor, norm: torch.Tensor, norm_new: torch.Tensor, target: float, floor: float
) -> torch.Tensor:
    """The next relative GMRES tolerance (Eisenstat & Walker 1996, choice 2, with Kelley's safeguards).

    Tight when |G| fell fast (the Newton model is good), loose otherwise; never tighter than
    needed to reach ``target`` = |G| at tol_q, nor than float rounding allows.
    """
    ratio = norm_new / norm.clamp_min(torch.finfo(norm.dtype).tiny)
    new = GAMMA * ratio * ratio
    previous = GAMMA * eta * eta
    new = torch.where(previous > 0.1, torch.maximum(new, previous), new)
    new = torch.maximum(new, 0.5 * target / norm_new.clamp_min(torch.finfo(norm.dtype).tiny))
    return new.clamp(floor, ETA_MAX)


def _status(
    q: torch.Tensor,
    collapsed: torch.Tensor,
    slow: torch.Tensor,
    dq: torch.Tensor,
    iteration: int,
    options: FinderOptions,
) -> torch.Tensor:
    """Per-sample status code, or -1 while a sample is still running."""
    running = torch.full(q.shape, -1, dtype=torch.int64, device=q.device)
    stalled = collapsed | (slow >= STALL_PATIENCE) | (dq < options.tol_dq) | ~torch.isfinite(q)
    status = torch.where(stalled, torch.full_like(running, Status.STALLED), running)
    if iteration >= options.max_iters:
        status = torch.where(status < 0, torch.full_like(running, Status.CAPPED), status)
    return torch.where(q < options.tol_q, torch.full_like(running, Status.CONVERGED), status)
