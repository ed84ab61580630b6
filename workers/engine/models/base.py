"""The StepModel contract: a batched recurrent map with exact Jacobians, on torch tensors.

Every model format (TorchScript, plain modules, ONNX, SavedModel) is adapted to this
one interface; solvers and analysis see nothing else. Tensors are batched along the
first dimension: states ``h: (n, n_states)``, inputs ``u: (n, n_inputs)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch

Dynamics = Literal["discrete", "continuous"]


class StepModel(ABC):
    """A map F(h, u) (discrete time) or vector field f(h, u) (continuous time).

    Subclasses implement :meth:`step` and may override the derivative methods with
    faster or more robust versions; the defaults use ``torch.func``.

    Attributes
    ----------
    n_states, n_inputs : int
        d and m.
    dynamics : {"discrete", "continuous"}
        Discrete: fixed points solve F(h, u) = h, stable when all |lambda| < 1.
        Continuous: fixed points solve f(h, u) = 0, stable when all Re lambda < 0.
    format : str
        Where the model came from (``"torchscript"``, ``"torch"``, ``"callable"``, ...).
    validation : dict or None
        How a loader checked the model against an independent runtime (ONNX: onnxruntime's
        ``max_abs_diff`` and the ``tolerance`` it was accepted with); None when nothing was compared.
    """

    n_states: int
    n_inputs: int
    dynamics: Dynamics = "discrete"
    format: str = "callable"
    validation: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """The summary a model record stores: format, n_states, n_inputs, dynamics (and validation, if any)."""
        described: dict[str, Any] = {
            "format": self.format,
            "n_states": self.n_states,
            "n_inputs": self.n_inputs,
            "dynamics": self.dynamics,
        }
        if self.validation is not None:
            described["validation"] = self.validation
        return described

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype:
        """The floating dtype the model computes in."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """The device the model's parameters live on."""

    @abstractmethod
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StepModel:
        """Return the model on ``device`` in ``dtype`` (may return ``self`` when unchanged)."""

    @abstractmethod
    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """F(h, u): (n, d), (n, m) -> (n, d)."""

    def jacobian_states(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dF/dh at each sample: (n, d, d), row i is the gradient of output i; a new tensor the
        caller may modify in place (never a view of the model's state or of a cache)."""
        return torch.func.vmap(torch.func.jacrev(self._step_one, argnums=0))(h, u)

    def jacobian_inputs(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """dF/du at each sample: (n, d, m)."""
        return torch.func.vmap(torch.func.jacrev(self._step_one, argnums=1))(h, u)

    def jacobians(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(dF/dh, dF/du) at each sample: (n, d, d), (n, d, m); subclasses share one forward pass."""
        return self.jacobian_states(h, u), self.jacobian_inputs(h, u)

    def jvp(self, h: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(h, u), dF/dh @ v) for a batch of tangents ``v: (n, d)``, without forming dF/dh."""
        return torch.func.jvp(lambda x: self.step(x, u), (h,), (v,))

    def vjp(self, h: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(h, u), w^T dF/dh) for a batch of cotangents ``w: (n, d)``."""
        out, pullback = torch.func.vjp(lambda x: self.step(x, u), h)
        return out, pullback(w)[0]

    def _step_one(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self.step(h.unsqueeze(0), u.unsqueeze(0)).squeeze(0)
