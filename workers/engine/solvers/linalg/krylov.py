"""Batched Krylov solvers for many independent small systems at once: restarted GMRES for A_i x_i = b_i,
CGLS for damped least squares min |J_i s_i - b_i|^2 + mu_i |s_i|^2.

Each sample has its own operator (a Jacobian at its own point), seen only through a batched
matrix-vector product ``matvec: (n, d) -> (n, d)``, so Newton-Krylov needs no dense Jacobian.
Every sample keeps its own Krylov basis ``(n, restart + 1, d)`` and Hessenberg matrix; Givens
rotations give each sample's residual norm after every step without a solve, so the batch
stops as soon as every sample meets its own tolerance, and each sample's solution uses the
first basis size at which it did (later basis vectors are ignored for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .jacobian_products import JacobianProducts

MatVec = Callable[[torch.Tensor], torch.Tensor]

#: Arnoldi steps between host checks of whether every sample has met its tolerance.
CHECK_EVERY = 4
#: CGLS iterations between host checks of whether every sample has met its tolerance.
CGLS_CHECK_EVERY = 5


@dataclass
class KrylovResult:
    """The outcome of :func:`gmres` for a batch, in the spirit of ``scipy.sparse.linalg.gmres``.

    Attributes
    ----------
    x : Tensor, (n, d)
        Approximate solutions.
    residual_norm : Tensor, (n,)
        |b - A x| as tracked by the rotations (the true residual up to rounding).
    converged : Tensor of bool, (n,)
        ``residual_norm <= rtol * |b|``.
    n_matvecs : int
        Batched matrix-vector products spent.
    """

    x: torch.Tensor
    residual_norm: torch.Tensor
    converged: torch.Tensor
    n_matvecs: int


def gmres(
    matvec: MatVec,
    b: torch.Tensor,
    rtol: float | torch.Tensor,
    *,
    restart: int = 30,
    max_restarts: int = 0,
    x0: torch.Tensor | None = None,
) -> KrylovResult:
    """Solve ``A_i x_i = b_i`` for every row ``i`` of ``b: (n, d)`` by restarted GMRES.

    Parameters
    ----------
    matvec : callable
        ``v: (n, d) -> (A_i v_i)_i``: one product per sample, batched.
    b : Tensor, (n, d)
        Right-hand sides.
    rtol : float or Tensor, (n,)
        Per-sample relative tolerance on the residual: |b - A x| <= rtol * |b|.
    restart : int
        Basis size per cycle (the memory is ``(n, restart + 1, d)``).
    max_restarts : int
        Extra cycles, each from the previous solution, for samples not yet within tolerance.
    x0 : Tensor, (n, d), optional
        Initial guess; zeros when None (saves one product).
    """
    _, d = b.shape
    restart = max(1, min(restart, d))
    target = torch.as_tensor(rtol, dtype=b.dtype, device=b.device) * torch.linalg.vector_norm(b, dim=-1)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    n_matvecs = 0
    residual = b
    for cycle in range(max_restarts + 1):
        if cycle or x0 is not None:
            residual = b - matvec(x)
            n_matvecs += 1
        step, res_norm, used = _cycle(matvec, residual, target, restart)
        x = x + step
        n_matvecs += used
        converged = res_norm <= target
        if cycle == max_restarts or bool(converged.all()):
            break
    return KrylovResult(x=x, residual_norm=res_norm, converged=converged, n_matvecs=n_matvecs)


def _cycle(matvec: MatVec, r: torch.Tensor, target: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One GMRES cycle from residual ``r``: the correction, the residual norms and the steps taken."""
    n, d = r.shape
    dtype, device = r.dtype, r.device
    tiny = torch.finfo(dtype).tiny
    beta = torch.linalg.vector_norm(r, dim=-1)
    basis = torch.zeros(n, k + 1, d, dtype=dtype, device=device)
    basis[:, 0] = r / beta.clamp_min(tiny).unsqueeze(-1)
    hess = torch.zeros(n, k, k, dtype=dtype, device=device)  # rotated to upper triangular as we go
    cos = torch.zeros(n, k, dtype=dtype, device=device)
    sin = torch.zeros(n, k, dtype=dtype, device=device)
    rhs = torch.zeros(n, k + 1, dtype=dtype, device=device)
    rhs[:, 0] = beta
    # Each sample's basis size: the first step at which it met its tolerance (k if never).
    size = torch.full((n,), k, dtype=torch.int64, device=device)
    size = torch.where(beta <= target, torch.zeros_like(size), size)
    res_norm = beta
    steps = 0
    for j in range(k):
        steps = j + 1
        w = matvec(basis[:, j])
        h = _orthogonalise(basis[:, : j + 1], w)
        h_next = torch.linalg.vector_norm(w, dim=-1)
        basis[:, j + 1] = torch.where(
            (h_next > tiny).unsqueeze(-1), w / h_next.clamp_min(tiny).unsqueeze(-1), torch.zeros_like(w)
        )
        for i in range(j):  # earlier rotations, applied to the new column
            h_i = cos[:, i] * h[:, i] + sin[:, i] * h[:, i + 1]
            h[:, i + 1] = -sin[:, i] * h[:, i] + cos[:, i] * h[:, i + 1]
            h[:, i] = h_i
        radius = torch.hypot(h[:, j], h_next).clamp_min(tiny)
        cos[:, j], sin[:, j] = h[:, j] / radius, h_next / radius
        h[:, j] = radius
        hess[:, : j + 1, j] = h[:, : j + 1]
        rhs[:, j + 1] = -sin[:, j] * rhs[:, j]
        rhs[:, j] = cos[:, j] * rhs[:, j]
        running = size == k
        res_norm = torch.where(running, rhs[:, j + 1].abs(), res_norm)
        size = torch.where(running & (res_norm <= target), torch.full_like(size, j + 1), size)
        if steps % CHECK_EVERY == 0 and bool((size < k).all()):
            break
    size = size.clamp_max(steps)
    y = _triangular_solve(hess[:, :steps, :steps], rhs[:, :steps], size)
    correction = torch.einsum("nkd,nk->nd", basis[:, :steps], y)
    return correction, res_norm, steps


def _orthogonalise(basis: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Make ``w: (n, d)`` orthogonal to ``basis: (n, j, d)`` in place; the coefficients
    ``(n, j + 1)``, with room for the new subdiagonal entry.

    Classical Gram-Schmidt, twice ("twice is enough"): as stable as modified Gram-Schmidt
    in float32, in four batched passes over the basis instead of 2j small ones. Projections
    are elementwise products (batched matrix-vector products of this shape are slower on CPU).
    """
    h = torch.zeros(w.shape[0], basis.shape[1] + 1, dtype=w.dtype, device=w.device)
    for _ in range(2):
        coeffs = (basis * w.unsqueeze(1)).sum(-1)
        w -= torch.bmm(coeffs.unsqueeze(1), basis).squeeze(1)
        h[:, :-1] += coeffs
    return h


def _triangular_solve(r: torch.Tensor, g: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Solve the leading ``size_i`` x ``size_i`` block of each upper-triangular ``r_i`` for ``g_i``;
    zeros beyond it (the block is padded with the identity and a zero right-hand side)."""
    k = r.shape[-1]
    inside = torch.arange(k, device=r.device).unsqueeze(0) < size.unsqueeze(-1)  # (n, k)
    both = inside.unsqueeze(-1) & inside.unsqueeze(-2)
    eye = torch.eye(k, dtype=r.dtype, device=r.device)
    r = torch.where(both, r, eye)
    g = torch.where(inside, g, torch.zeros_like(g))
    return torch.linalg.solve_triangular(r, g.unsqueeze(-1), upper=True).squeeze(-1)


def cgls(
    lin: JacobianProducts, rhs: torch.Tensor, mu: torch.Tensor, *, iters: int, rtol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, s minimising |J s - rhs|^2 + mu |s|^2 by CGLS from s = 0.

    Parameters
    ----------
    lin : JacobianProducts
        J through ``lin.jvp`` and J^T through ``lin.vjp``.
    rhs : Tensor, (n, d)
    mu : Tensor, (n,)
        Damping (> 0 keeps every system positive definite).
    iters : int
        At most this many products with J (and as many with J^T).
    rtol : float
        Stop a sample once |J^T (rhs - J s) - mu s| <= rtol |J^T rhs|.

    Returns
    -------
    s : Tensor, (n, d)
    model_q : Tensor, (n,)
        0.5 |J s - rhs|^2, the Gauss-Newton model's q after the step.
    """
    tiny = torch.finfo(rhs.dtype).tiny
    s = torch.zeros_like(rhs)
    r = rhs.clone()  # rhs - J s
    z = lin.vjp(r)  # J^T r - mu s
    p = z.clone()
    gamma = (z * z).sum(-1)
    target = (rtol * rtol) * gamma
    running = torch.ones_like(gamma, dtype=torch.bool)
    mu_ = mu.unsqueeze(-1)
    for k in range(iters):
        jp = lin.jvp(p)
        alpha = gamma / ((jp * jp).sum(-1) + mu * (p * p).sum(-1)).clamp_min(tiny)
        alpha = torch.where(running, alpha, torch.zeros_like(alpha)).unsqueeze(-1)
        s = s + alpha * p
        r = r - alpha * jp
        z = lin.vjp(r) - mu_ * s
        gamma_new = (z * z).sum(-1)
        running = running & (gamma_new > target)
        beta = (gamma_new / gamma.clamp_min(tiny)).unsqueeze(-1)
        p = z + beta * p
        gamma = gamma_new
        if (k + 1) % CGLS_CHECK_EVERY == 0 and not bool(running.any()):
            break
    return s, 0.5 * (r * r).sum(-1)
