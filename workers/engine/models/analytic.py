"""Closed forms of single-layer torch RNN, GRU and LSTM steps: the step itself and its Jacobians.

Reverse-mode autograd needs d backward passes of O(n·d²) flops each for one batch of
Jacobians; the closed forms below cost a few O(n·d²) element-wise products (each
Jacobian is a sum of diagonally scaled weight matrices). The step's closed form computes
what torch's cell computes in fewer kernels: one matrix product for the recurrent part
(the input part is one row when every sample shares its input), and one kernel per
non-linearity over all the gates that share it. Both are offered to
:class:`~.torch_step.TorchStepModel` as one more candidate path, checked against the
model's own forward and autograd on every model before use. Multi-layer layers and
projected LSTMs have no closed form here and use the module and autograd.

Gate conventions are torch's: GRU rows (r, z, n), LSTM rows (i, f, g, o).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from .recurrent import LayerStep, LSTMCellStep, recurrent_shape

# (h, u, want_states, want_inputs) -> [dF/dh, dF/du] (only the wanted ones, in that order)
JacobianFn = Callable[[torch.Tensor, torch.Tensor, bool, bool], list[torch.Tensor]]
# (h, u) -> F(h, u), with u one row per sample or one row for all
ClosedStepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def analytic_jacobians(fn: object) -> JacobianFn | None:
    """The closed-form Jacobians of a step function, when it is a single-layer recurrent step."""
    return _bound(fn, {"RNN": _rnn, "GRU": _gru, "LSTM": _lstm})


def analytic_step(fn: object) -> ClosedStepFn | None:
    """The closed-form step of a step function, when it is a single-layer recurrent step."""
    return _bound(fn, {"RNN": _rnn_step, "GRU": _gru_step, "LSTM": _lstm_step})


def _bound(fn: object, formulas: dict[str, Callable[..., Any]]) -> Any:
    """The formula for the kind of layer inside ``fn``, bound to its weights (and an RNN's
    non-linearity); None when ``fn`` is no single-layer recurrent step."""
    layer, suffix = _single_layer(fn)
    if layer is None:
        return None
    kind = recurrent_shape(layer).kind.removesuffix("Cell")
    formula, weights = formulas[kind], _weights(layer, suffix)
    if kind == "RNN":
        relu = getattr(layer, "nonlinearity", None) == "relu" or getattr(layer, "mode", "") == "RNN_RELU"
        return partial(formula, weights, relu=relu)
    return partial(formula, weights)


def _single_layer(fn: object) -> tuple[torch.nn.Module | None, str]:
    """The torch layer or cell inside a step function, with its parameter-name suffix."""
    if isinstance(fn, LayerStep):
        shape = recurrent_shape(fn.layer)
        if shape is not None and shape.num_layers == 1 and shape.proj_size == 0:
            return fn.layer, "_l0"
        return None, ""
    if isinstance(fn, LSTMCellStep):
        return fn.cell, ""
    shape = recurrent_shape(fn)
    if shape is not None and shape.kind in ("RNNCell", "GRUCell"):
        return fn, ""  # type: ignore[return-value]
    return _wrapped_lstm_cell(fn), ""


def _wrapped_lstm_cell(fn: object) -> torch.nn.Module | None:
    """The LSTMCell a module holds as its only child, as a user's (e.g. scripted) copy of
    LSTMCellStep does: a candidate only, used once its closed form agrees with autograd."""
    children = list(fn.children()) if isinstance(fn, torch.nn.Module) else []
    if len(children) == 1 and getattr(recurrent_shape(children[0]), "kind", None) == "LSTMCell":
        return children[0]
    return None


class _Weights:
    """A layer's input and recurrent weights and biases: the module's own tensors, read once (a step
    model's module keeps its parameters), with their transposes as views."""

    def __init__(self, w_ih: torch.Tensor, w_hh: torch.Tensor, b_ih: torch.Tensor | None, b_hh: torch.Tensor | None):
        self.w_ih, self.w_hh, self.b_ih, self.b_hh = w_ih, w_hh, b_ih, b_hh
        self.w_ih_t, self.w_hh_t = w_ih.T, w_hh.T
        self._row: _SharedRow | None = None

    def input_part(self, u: torch.Tensor) -> torch.Tensor:
        """W_ih u + b_ih; for inputs broadcast from one row (a stride-0 view), that row's, computed
        once while the row stays the same (:class:`_SharedRow`)."""
        return self._shared(u, "input", self._input_part)

    def hidden_part(self, h: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_hh, h, self.w_hh_t) if self.b_hh is not None else h @ self.w_hh_t

    def preactivation(self, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """W_ih u + b_ih + W_hh h + b_hh, (n, gates · hidden), with the input part added to the
        product's output (a single row of ``u`` is broadcast, not repeated)."""
        return torch.addmm(self._shared(u, "input and bias", self._input_and_bias), h, self.w_hh_t)

    def _input_part(self, u: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.b_ih, u, self.w_ih_t) if self.b_ih is not None else u @ self.w_ih_t

    def _input_and_bias(self, u: torch.Tensor) -> torch.Tensor:
        part = self._input_part(u)
        return part + self.b_hh if self.b_hh is not None else part

    def _shared(self, u: torch.Tensor, name: str, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``compute(u)``, for a broadcast row once per row (outside autograd: it depends on no
        state, and on inputs only where they need no gradient)."""
        if u.stride(0) != 0 or u.requires_grad:
            return compute(u)
        row = self._row  # one row throughout, whatever another thread stores meanwhile
        if row is None or not row.holds(u):
            row = self._row = _SharedRow(u)
        part = row.parts.get(name)
        if part is None:
            with torch.no_grad():
                part = row.parts[name] = compute(u[:1])
        return part


class _SharedRow:
    """The row a batch's inputs are broadcast from, and what the step computed from it alone.

    A search steps thousands of times with the inputs of its problem, one row broadcast over the
    batch, and on a small network the input part costs as much as the rest of the step. The row
    is recognised by its memory and its version counter, which every in-place write advances; the
    reference held here keeps that memory from being reused by another tensor.
    """

    def __init__(self, u: torch.Tensor) -> None:
        self.u = u
        self.key = self._key(u)
        self.parts: dict[str, torch.Tensor] = {}

    def holds(self, u: torch.Tensor) -> bool:
        return self._key(u) == self.key

    @staticmethod
    def _key(u: torch.Tensor) -> tuple[object, ...]:
        return (u.data_ptr(), u._version, u.shape[1], u.stride(1), u.dtype, u.device)


def _weights(layer: torch.nn.Module, suffix: str) -> _Weights:
    return _Weights(
        getattr(layer, f"weight_ih{suffix}"),
        getattr(layer, f"weight_hh{suffix}"),
        getattr(layer, f"bias_ih{suffix}", None),
        getattr(layer, f"bias_hh{suffix}", None),
    )


def _scaled(terms: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """sum_k diag(c_k) W_k for a batch: (n, d, k) from coefficients (n, d) and weights (d, k)."""
    (c, w), *rest = terms
    out = c.unsqueeze(2) * w
    for c, w in rest:
        out.addcmul_(c.unsqueeze(2), w)
    return out


def _add_diagonal(jac: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    jac.diagonal(dim1=1, dim2=2).add_(values)
    return jac


def _rnn_step(w: _Weights, h: torch.Tensor, u: torch.Tensor, relu: bool) -> torch.Tensor:
    """h' = phi(W_ih u + b_ih + W_hh h + b_hh)."""
    a = w.preactivation(h, u)
    return torch.relu(a) if relu else torch.tanh(a)


def _gru_step(w: _Weights, h: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """h' = n + z (h - n), n = tanh(i_n + r (W_hn h + b_hn)), r, z = sigmoid(i + W_h h + b_h)."""
    hidden = h.shape[1]
    gi, gh = w.input_part(u), w.hidden_part(h)
    rz = torch.sigmoid(gi[:, : 2 * hidden] + gh[:, : 2 * hidden])  # both gates in one kernel
    r, z = rz[:, :hidden], rz[:, hidden:]
    n = torch.tanh(torch.addcmul(gi[:, 2 * hidden :], r, gh[:, 2 * hidden :]))
    return torch.addcmul(n, z, h - n)


def _lstm_step(w: _Weights, state: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """[h', c'] with c' = f c + i g, h' = o tanh(c'), gates from W_ih u + W_hh h + biases."""
    hidden = w.w_hh.shape[1]
    h, c = state[:, :hidden], state[:, hidden:]
    gates = w.preactivation(h, u)
    sig = torch.sigmoid(gates)  # i, f and o in one kernel (g's quarter is computed and not used)
    i, f, o = sig[:, :hidden], sig[:, hidden : 2 * hidden], sig[:, 3 * hidden :]
    c_next = torch.addcmul(f * c, i, torch.tanh(gates[:, 2 * hidden : 3 * hidden]))
    return torch.cat([o * torch.tanh(c_next), c_next], dim=1)


def _rnn(w: _Weights, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool, relu: bool) -> list[torch.Tensor]:
    """h' = phi(W_ih u + b_ih + W_hh h + b_hh)."""
    a = w.preactivation(h, u)
    slope = (a > 0).to(a.dtype) if relu else 1 - torch.tanh(a) ** 2
    wanted = [(states, w.w_hh), (inputs, w.w_ih)]
    return [_scaled([(slope, weight)]) for want, weight in wanted if want]


def _gru(w: _Weights, h: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool) -> list[torch.Tensor]:
    """h' = (1 - z) n + z h, n = tanh(i_n + r (W_hn h + b_hn)), r, z = sigmoid(i + W_h h + b_h)."""
    gi, gh = w.input_part(u).chunk(3, dim=1), w.hidden_part(h).chunk(3, dim=1)
    r = torch.sigmoid(gi[0] + gh[0])
    z = torch.sigmoid(gi[1] + gh[1])
    n = torch.tanh(gi[2] + r * gh[2])
    dn = (1 - z) * (1 - n * n)  # dh'/d(pre-activation of n)
    c_r = dn * gh[2] * r * (1 - r)
    c_z = (h - n) * z * (1 - z)
    out = []
    if states:
        w_r, w_z, w_n = w.w_hh.chunk(3, dim=0)
        out.append(_add_diagonal(_scaled([(c_r, w_r), (c_z, w_z), (dn * r, w_n)]), z))
    if inputs:
        w_r, w_z, w_n = w.w_ih.chunk(3, dim=0)
        out.append(_scaled([(c_r, w_r), (c_z, w_z), (dn, w_n)]))
    return out


def _lstm(w: _Weights, state: torch.Tensor, u: torch.Tensor, states: bool, inputs: bool) -> list[torch.Tensor]:
    """[h', c'] with c' = f c + i g, h' = o tanh(c'), gates from W_ih u + W_hh h + biases."""
    hidden = w.w_hh.shape[1]
    h, c = state[:, :hidden], state[:, hidden:]
    gates = w.preactivation(h, u).chunk(4, dim=1)
    i, f, o = torch.sigmoid(gates[0]), torch.sigmoid(gates[1]), torch.sigmoid(gates[3])
    g = torch.tanh(gates[2])
    tanh_c = torch.tanh(f * c + i * g)
    k = o * (1 - tanh_c * tanh_c)  # dh'/dc'
    coefficients = (g * i * (1 - i), c * f * (1 - f), i * (1 - g * g))  # dc'/d(pre-activations i, f, g)
    c_o = tanh_c * o * (1 - o)

    def through_gates(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w_i, w_f, w_g, w_o = weights.chunk(4, dim=0)
        dc = _scaled(list(zip(coefficients, (w_i, w_f, w_g), strict=True)))
        dh = torch.addcmul(c_o.unsqueeze(2) * w_o, k.unsqueeze(2), dc)
        return dh, dc

    out = []
    if states:
        dh_dh, dc_dh = through_gates(w.w_hh)
        n = state.shape[0]
        jac = state.new_zeros(n, 2 * hidden, 2 * hidden)
        jac[:, :hidden, :hidden] = dh_dh
        jac[:, hidden:, :hidden] = dc_dh
        jac[:, :hidden, hidden:].diagonal(dim1=1, dim2=2).copy_(k * f)
        jac[:, hidden:, hidden:].diagonal(dim1=1, dim2=2).copy_(f)
        out.append(jac)
    if inputs:
        dh_du, dc_du = through_gates(w.w_ih)
        out.append(torch.cat([dh_du, dc_du], dim=1))
    return out
