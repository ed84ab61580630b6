"""``as_step_model``: anything torch that computes one recurrent step, as a checked StepModel."""

from __future__ import annotations

from typing import Any, get_args

import torch

from fpf_client.errors import InvalidModel

from .base import Dynamics, StepModel
from .contract import StepFn, check_signature, check_step, discover_shapes, user_errors_as_invalid_model
from .naming import SIZE_HINT_FIX
from .recurrent import as_step_function, recurrent_shape
from .torch_step import TorchStepModel, own_module, placement

_CALLABLE_DTYPES = (torch.float32, torch.float64)


def as_step_model(
    obj: Any, *, n_states: int | None = None, n_inputs: int | None = None, dynamics: Dynamics = "discrete"
) -> StepModel:
    """Adapt ``obj`` to the :class:`StepModel` contract and check it with a dry run.

    Parameters
    ----------
    obj
        A StepModel (returned as it is); an ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` or one of
        their cells, plain or scripted, run for one time step on the packed state
        ``[h_layer1, ..., h_layerL]`` (LSTM: ``[h_1..h_L, c_1..c_L]``, see
        :mod:`workers.engine.models.recurrent`); any nn.Module, TorchScript module or
        callable with the step signature ``forward(u: (n, m), h: (n, d)) -> (n, d)`` (or a
        tuple whose last element is that). Modules are copied: the caller's object is
        never put in eval mode, cast or moved.
    n_states, n_inputs : int, optional
        d and m. Needed when they cannot be read off the parameters; checked when given.
    dynamics : {"discrete", "continuous"}
        ``"continuous"``: the module computes a vector field f(h, u) whose zeros are the
        fixed points.

    Returns
    -------
    StepModel
        A callable without parameters computes in float32 when its dry run accepts
        float32, else float64.

    Raises
    ------
    InvalidModel
        ``obj`` does not fit the step contract; the message says why.
    """
    if isinstance(obj, StepModel):
        _check_hints(obj, n_states, n_inputs)
        return obj
    with user_errors_as_invalid_model("the model does not fit the step contract"):
        if isinstance(obj, torch.nn.Module):
            fmt = "torchscript" if isinstance(obj, torch.jit.ScriptModule) else "torch"
            return module_step_model(obj, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics, format=fmt)
        if callable(obj):
            return _callable_step_model(obj, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics)
    raise InvalidModel(f"a {type(obj).__name__} is not a model: expected a torch module or a step function")


def module_step_model(
    module: torch.nn.Module,
    *,
    n_states: int | None,
    n_inputs: int | None,
    dynamics: Dynamics,
    format: str,
    copy_module: bool = True,
) -> TorchStepModel:
    """A checked StepModel for a module: recurrent layers and cells by their sizes, any other
    module by its step signature and the shapes found by :func:`discover_shapes`."""
    _check_dynamics(dynamics)
    module = own_module(module, copy_module=copy_module)
    dtype, device = placement(module)
    if dtype in (torch.float16, torch.bfloat16):
        raise InvalidModel(
            f"the model's parameters are {str(dtype).removeprefix('torch.')}: fixed points need float32 or "
            "float64; convert it with model.float() before saving it"
        )
    shape = recurrent_shape(module)
    if shape is not None:
        fn: StepFn = as_step_function(module)
        d, m = shape.n_states, shape.input_size
        _check_hint("n_states", n_states, d, f"the {shape.kind}'s packed state size")
        _check_hint("n_inputs", n_inputs, m, f"the {shape.kind}'s input_size")
        check_step(fn, d, m, dtype=dtype, device=device)
    else:
        check_signature(module)
        fn = module
        d, m = discover_shapes(fn, n_states=n_states, n_inputs=n_inputs, dtype=dtype, device=device)
    model = TorchStepModel(fn, n_states=d, n_inputs=m, dynamics=dynamics, format=format)
    check_derivatives(model)
    return model


def check_derivatives(model: StepModel) -> None:
    """Take the step and every derivative once on a small random batch (this also checks the fast
    paths, the closed-form step among them).

    Raises
    ------
    InvalidModel
        When autograd cannot differentiate the model or the derivatives are not finite.
    """
    generator = torch.Generator().manual_seed(1)
    n, d, m = 3, model.n_states, model.n_inputs
    h, u, v = (0.5 * torch.randn(n, k, generator=generator, dtype=model.dtype).to(model.device) for k in (d, m, d))
    try:
        results = [model.step(h, u), *model.jacobians(h, u), *model.jvp(h, u, v), *model.vjp(h, u, v)]
    except Exception as error:
        raise InvalidModel(f"torch autograd cannot differentiate the model: {type(error).__name__}: {error}") from None
    if not all(bool(torch.isfinite(r).all()) for r in results):
        raise InvalidModel("the model's derivatives are not finite (NaN or inf) on a random batch")


def _callable_step_model(
    fn: StepFn, *, n_states: int | None, n_inputs: int | None, dynamics: Dynamics
) -> TorchStepModel:
    _check_dynamics(dynamics)
    check_signature(fn)
    if n_states is None or n_inputs is None:
        raise InvalidModel("a step function has no parameters to read its shapes from: pass n_states and n_inputs")
    first_error: InvalidModel | None = None
    for dtype in _CALLABLE_DTYPES:
        try:
            check_step(fn, n_states, n_inputs, dtype=dtype, device=torch.device("cpu"))
        except InvalidModel as error:
            first_error = first_error or error
            continue
        model = TorchStepModel(fn, n_states=n_states, n_inputs=n_inputs, dynamics=dynamics, dtype=dtype)
        check_derivatives(model)
        return model
    assert first_error is not None
    raise first_error


def _check_hints(model: StepModel, n_states: int | None, n_inputs: int | None) -> None:
    _check_hint("n_states", n_states, model.n_states, "the model's n_states")
    _check_hint("n_inputs", n_inputs, model.n_inputs, "the model's n_inputs")


def _check_hint(name: str, hint: int | None, actual: int, what: str) -> None:
    if hint is not None and hint != actual:
        raise InvalidModel(f"{name}={hint} does not match {what} ({actual}): {SIZE_HINT_FIX[name]}")


def _check_dynamics(dynamics: str) -> None:
    if dynamics not in get_args(Dynamics):
        raise InvalidModel(f"dynamics must be 'discrete' or 'continuous', not {dynamics!r}")
