"""Step modules shared by the tests, and the float64 finite-difference reference (no tests here)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

N_IN, HIDDEN = 3, 4


class RateStep(torch.nn.Module):
    """A continuous-time rate network f(h, u) = -h + tanh(W h + B u)."""

    def __init__(self, d: int = 5, m: int = 2) -> None:
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(d, d) / d**0.5)
        self.B = torch.nn.Parameter(torch.randn(d, m))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return -h + torch.tanh(h @ self.W.T + u @ self.B.T)


class GRUCellStep(torch.nn.Module):
    """A user step module around a GRU cell (scriptable)."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(N_IN, HIDDEN)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.cell(u, h)


class InPlaceLSTMStep(torch.nn.Module):
    """A hand-written LSTM whose gates use in-place activations (they appear in a trace)."""

    def __init__(self) -> None:
        super().__init__()
        self.x = torch.nn.ModuleList(torch.nn.Linear(N_IN, HIDDEN) for _ in range(4))
        self.r = torch.nn.ModuleList(torch.nn.Linear(HIDDEN, HIDDEN, bias=False) for _ in range(4))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        hidden, cell = h[:, :HIDDEN], h[:, HIDDEN:]
        z = [x(u) + r(hidden) for x, r in zip(self.x, self.r, strict=True)]
        i, f, g, o = z[0].sigmoid_(), z[1].sigmoid_(), z[2].tanh_(), z[3].sigmoid_()
        cell = f * cell + i * g
        return torch.cat([o * torch.tanh(cell), cell], dim=1)


class LSTMLayerStep(torch.nn.Module):
    """A user step module around nn.LSTM (its trace holds aten::lstm: no forward-mode AD)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = torch.nn.LSTM(N_IN, HIDDEN)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        state = (h[None, :, :HIDDEN].contiguous(), h[None, :, HIDDEN:].contiguous())
        y, (h_next, c_next) = self.lstm(u[None], state)
        return y[0], torch.cat([h_next[0], c_next[0]], dim=1)


class EndlessStep(torch.nn.Module):
    """tanh(h); a batch of 64 or more loops for minutes per step, in a model step the engine cannot
    stop (the dry run of validation is small)."""

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(h + 0.0 * u.sum(-1, keepdim=True))
        if h.shape[0] >= 64:
            for _ in range(100_000_000):
                x = torch.tanh(x)
        return x


class _NumpyTanh(torch.autograd.Function):
    """tanh whose backward goes through numpy: vmap, forward mode and double backward all fail."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return torch.from_numpy(grad.detach().numpy() * (1 - y.detach().numpy() ** 2))


class NumpyBackwardStep(torch.nn.Module):
    """A tanh RNN step through :class:`_NumpyTanh`: only plain backward passes work."""

    def __init__(self, d: int = 4, m: int = 2) -> None:
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(d, d) / d**0.5)
        self.B = torch.nn.Parameter(torch.randn(d, m))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return _NumpyTanh.apply(h @ self.W.T + u @ self.B.T)


def central_differences(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(n, d_out, k) Jacobian of a batched f: (n, k) -> (n, d_out), in float64, one column at a time."""
    x = x.to(torch.float64)
    columns = []
    for j in range(x.shape[1]):
        step = torch.zeros_like(x)
        step[:, j] = eps
        columns.append((f(x + step) - f(x - step)) / (2 * eps))
    return torch.stack(columns, dim=2)


def random_batch(n: int, d: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(0.5 * rng.standard_normal((n, d))), torch.from_numpy(rng.standard_normal((n, m)))
