"""Jacobian products at one point, many times over, with the model's passes done once.

A Krylov method multiplies the same Jacobian J(x) by dozens of vectors. ``StepModel.jvp``
recomputes F(x) each time (forward mode carries the primal along). Here the model's backward
pass is recorded once with a dummy cotangent w, g(w) = J^T w, and each product is the
derivative of that linear map: J v = d(g . v)/dw, one pass through the recorded graph (the
"double-backward" trick, about the cost of one tangent pass); J^T w reuses the recorded
forward pass. Models whose backward pass is not differentiable, or whose products disagree
with their own ``jvp`` on the first check, fall back to ``StepModel.jvp`` / ``vjp``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...models.base import StepModel

MatVec = Callable[[torch.Tensor], torch.Tensor]

#: Rows compared with ``StepModel.jvp`` when a model is first linearized.
CHECK_ROWS = 4
#: Models whose recorded double-backward products were checked against their own jvp.
_VERIFIED: weakref.WeakKeyDictionary[StepModel, bool] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class JacobianProducts:
    """F at a batch of points and products with its Jacobian there.

    Attributes
    ----------
    value : Tensor, (n, d)
        F(h, u).
    jvp : callable
        ``v: (n, d) -> dF/dh @ v`` per sample.
    vjp : callable
        ``w: (n, d) -> w^T dF/dh`` per sample.
    """

    value: torch.Tensor
    jvp: MatVec
    vjp: MatVec


def record_jacobian_products(model: StepModel, h: torch.Tensor, u: torch.Tensor) -> JacobianProducts:
    """F and its Jacobian products at ``h: (n, d)`` with inputs ``u: (n, m)``."""
    if _VERIFIED.get(model, True):
        try:
            recorded = _recorded(model, h, u)
        except RuntimeError:  # a backward pass that cannot be differentiated again
            recorded = None
        if recorded is not None and model not in _VERIFIED:
            _VERIFIED[model] = _agrees_with_jvp(model, h, u, recorded.jvp)
        elif recorded is None:
            _VERIFIED[model] = False
        if _VERIFIED[model]:
            return recorded
    with torch.no_grad():
        fx = model.step(h, u)
    return JacobianProducts(fx, lambda v: model.jvp(h, u, v)[1], lambda w: model.vjp(h, u, w)[1])


def _recorded(model: StepModel, h: torch.Tensor, u: torch.Tensor) -> JacobianProducts | None:
    """The forward and backward pass recorded once; None when the model leaves autograd."""
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        out = model.step(h, u)
        if not out.requires_grad:
            return None
        w = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, h, w, create_graph=True)
    if not g.requires_grad:
        return None

    def jvp(v: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(g, w, v, retain_graph=True)[0]

    def vjp(cotangent: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(out, h, cotangent, retain_graph=True)[0]

    return JacobianProducts(out.detach(), jvp, vjp)


def _agrees_with_jvp(model: StepModel, h: torch.Tensor, u: torch.Tensor, jvp: MatVec) -> bool:
    """Whether ``jvp`` matches ``model.jvp`` on a few rows (few, so that the model's own
    first jvp, which may build dense Jacobians to check its paths, stays cheap)."""
    probe = torch.randn(h.shape, generator=torch.Generator().manual_seed(0), dtype=h.dtype).to(h.device)
    rows = slice(0, CHECK_ROWS)
    u_rows = u if u.shape[0] == 1 else u[rows]
    expected = model.jvp(h[rows], u_rows, probe[rows])[1]
    tol = 1e-4 if h.dtype == torch.float32 else 1e-10
    scale = max(float(expected.abs().max()), 1.0)
    return bool(torch.allclose(jvp(probe)[rows], expected, rtol=tol, atol=tol * scale))
