"""Checking that a step function fits the contract, and finding its shapes.

A TorchScript file or a Python callable does not declare n_states and n_inputs.
Hints are checked by a dry run on a small random batch; without hints, candidate
shapes are read off the parameters (a recurrent layer or cell inside, square
recurrent weights with their input weights beside them) and a candidate is accepted
only when it is the single one that passes the dry run. Every way a function can
fail the contract is reported as :class:`InvalidModel` with a plain reason.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from fpf_client.errors import FpfError, InvalidModel

from .recurrent import recurrent_shape, shape_from_parameters

StepFn = Callable[[torch.Tensor, torch.Tensor], Any]

_DRY_RUN_BATCHES = (3, 1)
_MAX_CANDIDATES = 32


@contextmanager
def user_errors_as_invalid_model(context: str) -> Iterator[None]:
    """Turn whatever user code makes us raise into InvalidModel ("{context}: {error}");
    fpf's own errors pass unchanged."""
    try:
        yield
    except FpfError:
        raise
    except Exception as error:
        raise InvalidModel(f"{context}: {type(error).__name__}: {error}") from None


def check_signature(fn: StepFn) -> None:
    """Refuse a forward that cannot be called as ``forward(u, h)``.

    Raises
    ------
    InvalidModel
        No forward method, or one whose required positional arguments are not two.
    """
    if isinstance(fn, torch.jit.ScriptModule):
        if "forward" not in fn._c._method_names():
            raise InvalidModel("the TorchScript module has no forward method")
        arguments = [a for a in fn.forward.schema.arguments[1:] if not a.kwarg_only]
        names = [a.name for a in arguments]
        required = sum(not a.has_default_value() for a in arguments)
        accepts_two = required <= 2 <= len(arguments)
    else:
        try:
            signature = inspect.signature(fn.forward if isinstance(fn, torch.nn.Module) else fn)
        except (TypeError, ValueError):
            return  # a builtin without a signature: the dry run decides
        kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        positional = [p for p in signature.parameters.values() if p.kind in kinds]
        names = [p.name for p in positional]
        required = sum(p.default is inspect.Parameter.empty for p in positional)
        variadic = any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values())
        accepts_two = required <= 2 and (len(positional) >= 2 or variadic)
    if not accepts_two:
        raise InvalidModel(
            f"forward takes ({', '.join(names)}); the step contract is forward(u, h) -> h_next "
            "with inputs u: (n, n_inputs) and states h: (n, n_states)"
        )


def check_step(fn: StepFn, n_states: int, n_inputs: int, *, dtype: torch.dtype, device: torch.device) -> None:
    """Run ``fn`` on small random batches and check what it returns.

    Raises
    ------
    InvalidModel
        When forward raises, returns something other than a floating tensor of shape
        (n, n_states) in the input dtype (or a tuple ending with one), returns
        non-finite values, or writes into its inputs.
    """
    if n_states < 1 or n_inputs < 0:
        raise InvalidModel(f"n_states must be >= 1 and n_inputs >= 0 (got {n_states}, {n_inputs})")
    generator = torch.Generator().manual_seed(0)
    for n in _DRY_RUN_BATCHES:
        h = (0.5 * torch.randn(n, n_states, generator=generator, dtype=dtype)).to(device)
        u = (0.5 * torch.randn(n, n_inputs, generator=generator, dtype=dtype)).to(device)
        h_copy, u_copy = h.clone(), u.clone()
        what = f"on a batch of {n} states of size {n_states} and inputs of size {n_inputs}"
        out = _call(fn, h, u, what)
        _check_output(out, (n, n_states), dtype, what)
        if not (torch.equal(h, h_copy) and torch.equal(u, u_copy)):
            raise InvalidModel("forward writes into its inputs u or h; the step contract needs them unchanged")


def discover_shapes(
    fn: StepFn,
    *,
    n_states: int | None,
    n_inputs: int | None,
    dtype: torch.dtype,
    device: torch.device,
) -> tuple[int, int]:
    """(n_states, n_inputs): the hints when both are given (checked), else the one candidate
    from the parameters that passes a dry run.

    Raises
    ------
    InvalidModel
        The hints fail the dry run, or no single candidate does (the message asks for hints).
    """
    if n_states is not None and n_inputs is not None:
        check_step(fn, n_states, n_inputs, dtype=dtype, device=device)
        return n_states, n_inputs
    candidates = [
        (d, m)
        for d, m in shape_candidates(fn)
        if (n_states is None or d == n_states) and (n_inputs is None or m == n_inputs)
    ]
    passing = [shape for shape in candidates if _passes(fn, shape, dtype, device)]
    if len(passing) == 1:
        return passing[0]
    found = "no shape read from its parameters fits" if not passing else f"several shapes fit ({passing})"
    raise InvalidModel(f"cannot tell the model's state and input sizes: {found}; pass n_states and n_inputs")


def shape_candidates(fn: object) -> list[tuple[int, int]]:
    """Plausible (n_states, n_inputs) pairs read off a module's parameters, most specific first."""
    if not isinstance(fn, torch.nn.Module):
        return []
    candidates: list[tuple[int, int]] = []
    for module in fn.modules():
        shape = recurrent_shape(module) or shape_from_parameters(module)
        if shape is not None:
            candidates.append((shape.n_states, shape.input_size))
    matrices = [tuple(p.shape) for p in fn.parameters() if p.dim() == 2]
    for d in dict.fromkeys(rows for rows, cols in matrices if rows == cols):
        for rows, cols in matrices:
            if rows in (d, 2 * d, 3 * d, 4 * d):
                candidates.append((d, cols))
    return list(dict.fromkeys(candidates))[:_MAX_CANDIDATES]


def _passes(fn: StepFn, shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> bool:
    try:
        check_step(fn, *shape, dtype=dtype, device=device)
    except InvalidModel:
        return False
    return True


def _call(fn: StepFn, h: torch.Tensor, u: torch.Tensor, what: str) -> Any:
    try:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return fn(u, h)
    except Exception as error:
        raise InvalidModel(f"forward(u, h) failed {what}: {_reason(error)}") from None


def _check_output(out: Any, shape: tuple[int, int], dtype: torch.dtype, what: str) -> None:
    returned = type(out).__name__
    if isinstance(out, (tuple, list)) and out:
        out = out[-1]
        returned += f" ending with {type(out).__name__}"
        if isinstance(out, (tuple, list)):
            raise InvalidModel(
                f"forward(u, h) returned (output, [state]) {what}, as a recurrent cell or layer does: return the "
                "next state itself, e.g. `_, (h_next,) = cell(u, [h]); return h_next`"
            )
    if not isinstance(out, torch.Tensor):
        raise InvalidModel(
            f"forward(u, h) returned {returned} {what}; expected a tensor (n, n_states) "
            "or a tuple whose last element is one"
        )
    if tuple(out.shape) != shape:
        raise InvalidModel(f"forward(u, h) returned shape {tuple(out.shape)} {what}; expected {shape}")
    if out.dtype != dtype:
        raise InvalidModel(f"forward(u, h) returned dtype {out.dtype} {what}; expected {dtype}")
    if not bool(torch.isfinite(out).all()):
        raise InvalidModel(f"forward(u, h) returned non-finite values (NaN or inf) {what}")


def _reason(error: BaseException) -> str:
    """The first meaningful line of an exception, without TorchScript's long traceback."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    message = lines[-1] if lines and "TorchScript interpreter" in str(error) else (lines[0] if lines else "")
    return f"{type(error).__name__}: {message}"[:500]
