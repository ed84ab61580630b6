"""A torch step function as a StepModel, with fast exact batched derivatives.

The wrapped function has the step signature ``fn(u: (n, m), h: (n, d)) -> (n, d)``
(or a tuple whose last element is that tensor): a Python nn.Module, a TorchScript
module, or any differentiable callable.

Single-layer torch RNN/GRU/LSTM steps run by their closed form (:mod:`.analytic`) once it
agrees with the module's own forward: the same map in fewer kernels, with the input part of
a shared input computed once per call instead of once per sample. On the CPU it is taken
once correct; on a GPU, where torch fuses a cell's element-wise work into one kernel, it
must also be the faster of the two at the first realistic batch.

Jacobians come from closed forms for single-layer torch RNN/GRU/LSTM steps
(:mod:`.analytic`), or from one forward pass and either one ``autograd.grad(...,
is_grads_batched=True)`` call (vmap over the backward pass) or d ordinary backward
passes; for small batches (the analysis of a few roots, Newton's last steps), from one
forward and one backward pass over the batch repeated d times, one call instead of d.
Jacobian-vector products come from forward mode, the double-backward trick or the
Jacobian itself. Which is correct and fastest depends on the model, so each model
checks and times its options once (:class:`~.paths.PathChoice`). TorchScript runs under
``torch.jit.optimized_execution(False)`` in every call: its optimised executor gives
wrong or failing derivatives for traced graphs with in-place ops (FIELD-NOTES), and
is no faster on these models. The setting is thread-local, so each call enters it.
On a GPU, cuDNN is switched off around each call: its RNN kernels refuse backward passes
in eval mode and have no double backward.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

from .analytic import analytic_jacobians, analytic_step
from .base import Dynamics, StepModel
from .derivative_paths import PathChoice

StepFn = Callable[[torch.Tensor, torch.Tensor], Any]
Rows = list[torch.Tensor]
Pair = tuple[torch.Tensor, torch.Tensor]

_FLOAT_DTYPES = (torch.float32, torch.float64)
#: Batches of at most this many rows (samples x states) take Jacobians by one backward pass over
#: the batch repeated d times: d separate backward calls cost the same whatever the batch, one
#: pass over the repeated batch is cheaper up to here (above it, memory grows as n d^2 and the
#: chosen path is as fast).
REPLICATE_MAX_ROWS = 1 << 14


class TorchStepModel(StepModel):
    """A torch step function ``fn(u, h) -> h_next`` adapted to :class:`StepModel`.

    Parameters
    ----------
    fn : nn.Module or callable
        The step function. A module is used as given: callers that must not touch a
        user's module pass a copy (see :func:`own_module`).
    n_states, n_inputs : int
        d and m.
    dynamics : {"discrete", "continuous"}
        Whether ``fn`` is a map F(h, u) or a vector field f(h, u).
    format : str
        Recorded in :meth:`describe`.
    dtype, device : optional
        For a callable without parameters: the dtype and device it computes in
        (default: torch's default dtype, CPU). Modules report their parameters'.
    """

    def __init__(
        self,
        fn: StepFn,
        *,
        n_states: int,
        n_inputs: int,
        dynamics: Dynamics = "discrete",
        format: str = "callable",
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.fn = fn
        self.n_states = int(n_states)
        self.n_inputs = int(n_inputs)
        self.dynamics = dynamics
        self.format = format
        self._dtype, self._device = placement(fn, dtype, device)
        self._analytic = analytic_jacobians(fn)
        self._analytic_step = analytic_step(fn)
        self._step_path: PathChoice[torch.Tensor] = PathChoice(
            ("analytic",) if self._analytic_step is not None else (),
            reference="module",
            decisive=("analytic",) if self._device.type == "cpu" else (),
        )
        candidates = ("analytic", "batched") if self._analytic is not None else ("batched",)
        self._jacobian_path: PathChoice[Rows] = PathChoice(candidates, reference="loop", decisive=("analytic",))
        self._small_jacobian_path: PathChoice[Rows] = PathChoice(
            ("replicated",) if self._analytic is None else (), reference="loop", decisive=("replicated",)
        )
        self._jvp_path: PathChoice[Pair] = PathChoice(("forward", "double_backward"), reference="jacobian")
        self._eye: torch.Tensor | None = None
        self._casts: dict[tuple[torch.device, torch.dtype], TorchStepModel] = {}

    # --- StepModel -------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def derivative_paths(self) -> dict[str, str | None]:
        """How this model computes Jacobians (of large and of small batches) and jvps; None until
        a call has chosen."""
        return {
            "jacobian": self._jacobian_path.chosen,
            "small_batch_jacobian": self._small_jacobian_path.chosen,
            "jvp": self._jvp_path.chosen,
        }

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TorchStepModel:
        """The model on ``device`` in ``dtype`` (float32 or float64); ``self`` when nothing changes.

        A module is deep-copied before it is moved, so the original keeps its dtype. Copies
        are kept, so every job casting a cached model reuses one copy; on the same device the
        copy inherits which derivative paths were found correct and fast.
        """
        if dtype is not None and dtype not in _FLOAT_DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float64, not {dtype}")
        device = _full_device(device) if device is not None else self._device
        dtype = dtype or self._dtype
        if device == self._device and dtype == self._dtype:
            return self
        cast = self._casts.get((device, dtype))
        if cast is None:
            fn = own_module(self.fn).to(device=device, dtype=dtype) if isinstance(self.fn, torch.nn.Module) else self.fn
            cast = TorchStepModel(
                fn,
                n_states=self.n_states,
                n_inputs=self.n_inputs,
                dynamics=self.dynamics,
                format=self.format,
                dtype=dtype,
                device=device,
            )
            if device == self._device:
                cast._step_path = self._step_path.copy()
                cast._jacobian_path = self._jacobian_path.copy()
                cast._small_jacobian_path = self._small_jacobian_path.copy()
                cast._jvp_path = self._jvp_path.copy()
            self._casts[(device, dtype)] = cast
        return cast

    def step(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """F(h, u): by the closed form once it agrees with the module, else by the module."""
        path = self._step_path.chosen
        if path is not None:  # the common case, without a closure per call
            return self._step_by(path, h, u)
        return self._step_path.run(lambda path: self._step_by(path, h, u), _close, batch=h.shape[0], device=h.device)

    def jacobian_states(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._jacobians(h, u, states=True, inputs=False)[0]

    def jacobian_inputs(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return self._jacobians(h, u, states=False, inputs=True)[0]

    def jacobians(self, h: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dfdh, dfdu = self._jacobians(h, u, states=True, inputs=True)
        return dfdh, dfdu

    def jvp(self, h: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(h, u), dF/dh @ v): forward mode or double backward, whichever is correct and faster."""
        u = _batch_inputs(h, u)
        with self._plain():
            return self._jvp_path.run(
                lambda path: self._jvp_by(path, h, u, v),
                lambda a, b: _close(a[1], b[1]),
                batch=h.shape[0],
                device=h.device,
            )

    def vjp(self, h: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F(h, u), w^T dF/dh): one forward and one backward pass."""
        with self._plain(), torch.enable_grad():
            h = h.detach().requires_grad_(True)
            out = self._call(h, _batch_inputs(h, u))
            return out.detach(), _grads(out, (h,), w)[0]

    # --- internals -------------------------------------------------------------------
    def _plain(self) -> AbstractContextManager[None]:
        """Plain interpreter execution for TorchScript, and on a GPU torch's own RNN kernels."""
        return _without_cudnn() if self._device.type == "cuda" else torch.jit.optimized_execution(False)

    def _step_by(self, path: str, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if path == "analytic":
            assert self._analytic_step is not None
            return self._analytic_step(h, u)
        with self._plain():
            return self._call(h, _batch_inputs(h, u))

    def _call(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        out = self.fn(u, h)
        return out[-1] if isinstance(out, (tuple, list)) else out

    def _jacobians(self, h: torch.Tensor, u: torch.Tensor, *, states: bool, inputs: bool) -> Rows:
        u = _batch_inputs(h, u)
        choice = self._jacobian_path
        if choice.chosen == "analytic":
            return self._closed_form(h, u, states, inputs)
        if self._analytic is None and h.shape[0] * h.shape[1] <= REPLICATE_MAX_ROWS:
            return self._small_jacobian_path.run(
                lambda path: (
                    self._rows_of_copies(h, u, states, inputs)
                    if path == "replicated"
                    else self._jacobians_by_loop(h, u, states, inputs)
                ),
                lambda a, b: all(_close(x, y) for x, y in zip(a, b, strict=True)),
                batch=h.shape[0],
                device=h.device,
            )
        with self._plain(), torch.enable_grad():
            out, wrt = self._recorded(h, u, states, inputs)
            if not out.requires_grad:
                return [out.new_zeros(out.shape + x.shape[1:]) for x in wrt]
            if choice.chosen is not None:
                return self._rows_by(choice.chosen, out, wrt)
            return choice.run(
                lambda path: (
                    self._closed_form(h, u, states, inputs)
                    if path == "analytic"
                    else self._rows_by(path, out, wrt, retain_graph=True)
                ),
                lambda a, b: all(_close(x, y) for x, y in zip(a, b, strict=True)),
                batch=out.shape[0],
                device=out.device,
            )

    def _rows_of_copies(self, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool) -> Rows:
        """Jacobian rows from the batch repeated d times: copy i of sample k is pulled back along e_i."""
        n, d = h.shape
        with self._plain(), torch.enable_grad():
            hx = h.detach().repeat_interleave(d, dim=0).requires_grad_(states)
            ux = u.detach().repeat_interleave(d, dim=0).requires_grad_(inputs)
            out = self._call(hx, ux)
            wrt = tuple(x for x, wanted in ((hx, states), (ux, inputs)) if wanted)
            if not out.requires_grad:
                return [out.new_zeros(n, d, x.shape[1]) for x in wrt]
            cotangent = torch.eye(d, dtype=out.dtype, device=out.device).repeat(n, 1)
            return [g.view(n, d, g.shape[1]) for g in _grads(out, wrt, cotangent)]

    def _jacobians_by_loop(self, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool) -> Rows:
        with self._plain(), torch.enable_grad():
            out, wrt = self._recorded(h, u, states, inputs)
            if not out.requires_grad:
                return [out.new_zeros(out.shape + x.shape[1:]) for x in wrt]
            return self._rows_by("loop", out, wrt)

    def _recorded(
        self, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """F(h, u) with its graph recorded, and the leaves (h, u, or both) to differentiate by."""
        hx = h.detach().requires_grad_(states)
        ux = u.detach().contiguous().requires_grad_(inputs) if inputs else u
        out = self._call(hx, ux)
        return out, tuple(x for x, wanted in ((hx, states), (ux, inputs)) if wanted)

    def _closed_form(self, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool) -> Rows:
        assert self._analytic is not None
        with torch.no_grad():
            return self._analytic(h, u, states, inputs)

    def _rows_by(self, path: str, out: torch.Tensor, wrt: tuple[torch.Tensor, ...], retain_graph: bool = False) -> Rows:
        n, d = out.shape
        if path == "batched":
            grads = _grads(out, wrt, self._identity(out), retain_graph=retain_graph, is_grads_batched=True)
            return [g.transpose(0, 1).contiguous() for g in grads]
        ones = out.new_ones(n)
        rows = [_grads(out[:, i], wrt, ones, retain_graph=retain_graph or i < d - 1) for i in range(d)]
        return [torch.stack([row[k] for row in rows], dim=1) for k in range(len(wrt))]

    def _identity(self, out: torch.Tensor) -> torch.Tensor:
        """The batched cotangents e_i, broadcast over the batch: (d, n, d), cached."""
        n, d = out.shape
        eye = self._eye
        if eye is None or eye.shape[0] != d or eye.dtype != out.dtype or eye.device != out.device:
            eye = self._eye = torch.eye(d, dtype=out.dtype, device=out.device)
        return eye.unsqueeze(1).expand(d, n, d)

    def _jvp_by(self, path: str, h: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> Pair:
        if path == "forward":
            out, jv = torch.func.jvp(lambda x: self._call(x, u), (h.detach(),), (v,))
            return out.detach(), jv.detach()
        if path == "double_backward":
            return _double_backward_jvp(self._call, h, u, v)
        jac = self._jacobians(h, u, states=True, inputs=False)[0]
        return self._call(h.detach(), u).detach(), torch.einsum("nij,nj->ni", jac, v)


def _double_backward_jvp(
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], h: torch.Tensor, u: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """J v from reverse mode alone: g(w) = J^T w is linear in w, so dg/dw^T v = J v."""
    with torch.enable_grad():
        h = h.detach().requires_grad_(True)
        out = call(h, u)
        if not out.requires_grad:
            return out.detach(), torch.zeros_like(out)
        w = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, h, w, create_graph=True)
        if not g.requires_grad:
            # J^T w is linear in w and cannot be constant: the backward pass left autograd.
            raise RuntimeError("the model's backward pass is not differentiable")
        (jv,) = torch.autograd.grad(g, w, v)
    return out.detach(), jv


def _grads(
    out: torch.Tensor, wrt: tuple[torch.Tensor, ...], cotangent: torch.Tensor, **kwargs: Any
) -> tuple[torch.Tensor, ...]:
    """``autograd.grad`` with zeros (not None) for inputs the output does not depend on."""
    if not out.requires_grad:
        return tuple(torch.zeros_like(x) for x in wrt)
    return torch.autograd.grad(out, wrt, cotangent, materialize_grads=True, **kwargs)


@contextmanager
def _without_cudnn() -> Iterator[None]:
    # cudnn.flags sets process-wide flags (restored on exit); workers run one job per process.
    with torch.jit.optimized_execution(False), torch.backends.cudnn.flags(enabled=False):
        yield


def _full_device(device: torch.device | str) -> torch.device:
    """``cuda`` as ``cuda:<current>``, the form a module's parameters report."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _batch_inputs(h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Broadcast inputs ``(1, m)`` to the batch ``(n, m)`` (a view)."""
    if u.shape[0] != h.shape[0]:
        return u.expand(h.shape[0], u.shape[1])
    return u


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    tol = 1e-4 if a.dtype == torch.float32 else 1e-10
    scale = float(b.abs().max()) if b.numel() else 0.0
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol * max(scale, 1.0)))


def placement(
    fn: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> tuple[torch.dtype, torch.device]:
    """(dtype, device) of a module's first floating parameter or buffer; the given defaults
    (else torch's default dtype, CPU) for a callable or a module without one."""
    if isinstance(fn, torch.nn.Module):
        for tensor in [*fn.parameters(), *fn.buffers()]:
            if tensor.is_floating_point():
                return tensor.dtype, tensor.device
    return dtype or torch.get_default_dtype(), torch.device(device or "cpu")


def own_module(module: torch.nn.Module, *, copy_module: bool = True) -> torch.nn.Module:
    """A module ready to serve as a step: a private copy (unless told not to), in eval mode,
    with parameters that do not require grad (derivatives are taken w.r.t. h and u only)."""
    if copy_module:
        module = copy.deepcopy(module)
    module.eval()
    for parameter in module.parameters():
        if parameter.is_leaf:
            parameter.requires_grad_(False)
        else:  # a deep-copied TorchScript module holds clones of its parameters
            parameter.detach_()
    return module
