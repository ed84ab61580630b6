"""What every solver sees and returns: the root-finding :class:`Problem` and the :class:`SolveResult`.

A solver finds roots of G(x) = F(x, u) - x (discrete time) or G(x) = f(x, u) (continuous
time) for a batch of starting points. It reaches the model only through the Problem, which
offers the residual, its dense Jacobian and its Jacobian-vector product, so a dense Newton
solver and a matrix-free Newton-Krylov solver can sit side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import torch

from ..models.base import Dynamics, StepModel
from .linalg.jacobian_products import JacobianProducts, record_jacobian_products


class Status(IntEnum):
    """How a sample's search ended."""

    CONVERGED = 0  #: q < tol_q
    STALLED = 1  #: no further decrease of q is possible (a minimum of q that is not a root, or a floor)
    CAPPED = 2  #: max_iters reached first


@dataclass(frozen=True)
class Problem:
    """Root finding for G on a batch: one row of ``inputs`` per sample (or one shared row).

    Parameters
    ----------
    model : StepModel
        The map F (discrete) or vector field f (continuous).
    inputs : Tensor, (1 | n, m)
        Constant inputs; one row is broadcast over the batch.
    dynamics : {"discrete", "continuous"}
        Chooses G = F - x or G = f.
    """

    model: StepModel
    inputs: torch.Tensor
    dynamics: Dynamics = "discrete"

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        return self.inputs.expand(x.shape[0], -1) if self.inputs.shape[0] == 1 else self.inputs

    def subset(self, index: torch.Tensor) -> Problem:
        """The same problem restricted to the samples ``index`` (a shared input row stays shared)."""
        inputs = self.inputs if self.inputs.shape[0] == 1 else self.inputs[index]
        return Problem(self.model, inputs, self.dynamics)

    def map(self, x: torch.Tensor) -> torch.Tensor:
        """F(x, u) (or f(x, u)): (n, d) -> (n, d)."""
        return self.model.step(x, self._u(x))

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """G(x): (n, d) -> (n, d), without recording a graph."""
        with torch.no_grad():
            fx = self.map(x)
        return fx - x if self.dynamics == "discrete" else fx

    def jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """dG/dx: (n, d) -> (n, d, d)."""
        jac = self.model.jacobian_states(x, self._u(x))
        if self.dynamics == "discrete":
            jac.diagonal(dim1=-2, dim2=-1).sub_(1.0)  # the model returns a new tensor (StepModel contract)
        return jac

    def jvp(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G(x), dG/dx @ v) for tangents ``v: (n, d)``, without forming dG/dx."""
        fx, jv = self.model.jvp(x, self._u(x), v)
        if self.dynamics == "discrete":
            return fx - x, jv - v
        return fx, jv

    def jacobian_products(self, x: torch.Tensor) -> JacobianProducts:
        """G(x) and products with dG/dx at ``x``, for many vectors: the model's passes are
        recorded once (:mod:`.linalg.jacobian_products`), so each product costs about one tangent pass."""
        lin = record_jacobian_products(self.model, x, self._u(x))
        if self.dynamics == "continuous":
            return lin
        return JacobianProducts(lin.value - x, lambda v: lin.jvp(v) - v, lambda w: lin.vjp(w) - w)


@dataclass
class SolveResult:
    """A solver's answer for a batch, in the spirit of ``scipy.optimize.OptimizeResult``.

    Attributes
    ----------
    x : Tensor, (n, d)
        Final points.
    q : Tensor, (n,)
        0.5 * |G(x)|^2 at ``x``.
    dq : Tensor, (n,)
        The last change of q (absolute).
    n_iters : Tensor, (n,) int
        Iterations each sample took.
    status : Tensor, (n,) int
        :class:`Status` codes.
    step_norm : Tensor, (n,)
        Norm of the last step (Newton: the Newton step, an error estimate of x).
    iterations : int
        Iterations of the batch loop (the longest sample).
    """

    x: torch.Tensor
    q: torch.Tensor
    dq: torch.Tensor
    n_iters: torch.Tensor
    status: torch.Tensor
    step_norm: torch.Tensor
    iterations: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def converged(self) -> torch.Tensor:
        return self.status == Status.CONVERGED

    @classmethod
    def concatenate(cls, parts: list[SolveResult]) -> SolveResult:
        """Join the results of consecutive chunks (a single one is returned as it is)."""
        if len(parts) == 1:
            return parts[0]
        cat = {
            name: torch.cat([getattr(p, name) for p in parts])
            for name in ("x", "q", "dq", "n_iters", "status", "step_norm")
        }
        return cls(**cat, iterations=max(p.iterations for p in parts))

    def select(self, index: torch.Tensor) -> SolveResult:
        """The samples ``index`` (indices, mask or slice)."""
        picked = {name: getattr(self, name)[index] for name in ("x", "q", "dq", "n_iters", "status", "step_norm")}
        return SolveResult(**picked, iterations=self.iterations)

    def update(self, index: torch.Tensor, other: SolveResult) -> None:
        """Overwrite the samples ``index`` with ``other`` (e.g. after a rerun)."""
        for name in ("x", "q", "dq", "n_iters", "status", "step_norm"):
            getattr(self, name)[index] = getattr(other, name)
        self.iterations = max(self.iterations, other.iterations)


class ResultBuffers:
    """Result arrays that finished samples are written into as they leave a compacted batch."""

    def __init__(self, x: torch.Tensor) -> None:
        n = x.shape[0]
        self.x = torch.empty_like(x)
        self.q = torch.empty(n, dtype=x.dtype, device=x.device)
        self.dq = torch.empty_like(self.q)
        self.step_norm = torch.empty_like(self.q)
        self.n_iters = torch.empty(n, dtype=torch.int64, device=x.device)
        self.status = torch.empty(n, dtype=torch.int64, device=x.device)

    def retire(
        self, done: torch.Tensor, index: torch.Tensor, iteration: int, **fields: torch.Tensor
    ) -> torch.Tensor | None:
        """Store the rows ``done`` (a mask over a running batch) of the batch's ``x``, ``q``, ``dq``,
        ``status`` and ``step_norm`` as the samples ``index[done]``.

        Returns the positions of the rows still running, to compact the batch with, or None when
        no row is done. Rows are gathered by index, not by mask: a mask finds its rows again for
        every field.
        """
        finished = torch.nonzero(done).squeeze(-1)
        if not finished.numel():
            return None
        samples = index.index_select(0, finished)
        for name, value in fields.items():
            getattr(self, name).index_copy_(0, samples, value.index_select(0, finished))
        self.n_iters.index_fill_(0, samples, iteration)
        return torch.nonzero(~done).squeeze(-1)

    def result(self, iterations: int) -> SolveResult:
        return SolveResult(
            x=self.x,
            q=self.q,
            dq=self.dq,
            n_iters=self.n_iters,
            status=self.status,
            step_norm=self.step_norm,
            iterations=iterations,
        )


class ProgressHook(Protocol):
    """Called by a solver where it synchronises with the host anyway; may raise :class:`TimeUp`."""

    def __call__(self, iteration: int, q: torch.Tensor, n_done: int) -> None: ...


class TimeUp(Exception):
    """Raised by a progress hook when the search's time is over.

    The solver does not propagate it: it ends its running samples as ``CAPPED`` where they
    stand and returns, so the caller can still build a (partial) result from them.
    """


def time_up(progress: ProgressHook | None, iteration: int, q: torch.Tensor, n_done: int) -> bool:
    """Call ``progress`` (when given); True when it raised :class:`TimeUp`, i.e. the solver must stop."""
    if progress is None:
        return False
    try:
        progress(iteration, q, n_done)
    except TimeUp:
        return True
    return False


class HostChecks:
    """What a compacting solver does with its statuses at each host check: count the converged
    samples for the progress hook (only when there is one: the count costs a host sync) and, once
    the hook raises :class:`TimeUp`, end the running samples as ``CAPPED``."""

    def __init__(self, progress: ProgressHook | None) -> None:
        self.progress = progress
        self.n_converged = 0

    def status(self, iteration: int, q: torch.Tensor, status: torch.Tensor) -> torch.Tensor:
        """``status`` (per sample, -1 while running) after reporting ``iteration`` and best ``q``."""
        if self.progress is None:
            return status
        self.n_converged += int((status == Status.CONVERGED).sum())
        if time_up(self.progress, iteration, q, self.n_converged):
            return torch.where(status < 0, int(Status.CAPPED), status)
        return status


class WatchedHook:
    """A progress hook that passes calls on to ``progress`` and remembers whether it raised
    :class:`TimeUp`: a solver swallows TimeUp, and its caller may need to know that it fired."""

    def __init__(self, progress: ProgressHook | None) -> None:
        self.progress = progress
        self.fired = False

    def __call__(self, iteration: int, q: torch.Tensor, n_done: int) -> None:
        if self.progress is None:
            return
        try:
            self.progress(iteration, q, n_done)
        except TimeUp:
            self.fired = True
            raise


#: A solver: (problem, x0, settings, progress hook) -> SolveResult. ``x0`` is never modified.
Solver = Callable[..., SolveResult]
