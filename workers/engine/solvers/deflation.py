"""Deflation of known roots (Farrell, Birkisson & Funke 2015), to steer Newton to roots it missed.

The deflated residual is M(x) G(x) with M(x) = prod_k (|x - r_k|^-2 + 1). It has the same
roots as G except the deflated r_k, where it no longer vanishes. Its Newton step is the plain
Newton step d rescaled: d / (1 - grad(log M) . d), so deflation costs no extra model calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Deflation:
    """Known roots to deflate, each tied to an input condition.

    Parameters
    ----------
    roots : Tensor, (k, d)
        Roots already found.
    root_group : Tensor, (k,) int
        Input condition of each root.
    sample_group : Tensor, (n,) int
        Input condition of each sample: a root deflates the samples of its own condition only.
    """

    roots: torch.Tensor
    root_group: torch.Tensor
    sample_group: torch.Tensor

    def subset(self, index: torch.Tensor) -> Deflation:
        """The same roots for the samples ``index``."""
        return Deflation(self.roots, self.root_group, self.sample_group[index])

    def log_factor_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log M(x) and its gradient for the samples ``x: (n, d)``: (n,), (n, d)."""
        diff = x.unsqueeze(1) - self.roots.unsqueeze(0)  # (n, k, d)
        sq = (diff * diff).sum(-1).clamp_min(torch.finfo(x.dtype).tiny)  # (n, k)
        applies = (self.sample_group.unsqueeze(1) == self.root_group.unsqueeze(0)).to(x.dtype)
        log_m = ((torch.log1p(sq) - torch.log(sq)) * applies).sum(-1)
        weight = -2.0 * applies / (sq * (1.0 + sq))  # d/ds of log(1 + 1/s), times 2 from ds/dx
        grad = (weight.unsqueeze(-1) * diff).sum(1)
        return log_m, grad

    def rescale(self, x: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The deflated Newton step for the plain step ``step`` at ``x``, and log M(x)."""
        log_m, grad = self.log_factor_and_grad(x)
        denom = 1.0 - (grad * step).sum(-1)
        denom = torch.where(denom.abs() < 1e-3, torch.full_like(denom, 1e-3), denom)
        return step / denom.unsqueeze(-1), log_m
