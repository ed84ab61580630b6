"""onnx2torch, importable without torchvision and completed for what RNN exports contain.

onnx2torch 1.5.15 lacks converters that real exports need: the ONNX ``RNN``, ``GRU``
and ``LSTM`` ops (a full ``nn.RNN``/``nn.GRU``/``nn.LSTM`` exports to them), ``Split``-18
and the opset-18 reductions (axes moved from an attribute to an input), ``Reshape`` with
``allowzero=1`` (torch's dynamo exporter writes it), ``Loop`` and ``Scan`` (a step wrapped in a
loop of length 1, :mod:`.onnx_loops`), and the
revisions of common ops that only added tensor types (opsets 16-24). This module adds
them to onnx2torch's registry once, on first use.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from collections.abc import Callable
from functools import cache

import onnx
import torch
from onnx import defs
from torch import nn

from .onnx_loops import MODEL_OPSETS, loop_converter, scan_converter

# Op revisions that only widened the accepted tensor types (float8, int4, bfloat16, ...):
# the converter of the previous revision is exact for every type torch computes in.
_TYPE_ONLY_REVISIONS: dict[str, tuple[int, ...]] = {
    "Cast": (19, 21, 23, 24),
    "Constant": (19, 21, 23, 24),
    "ConstantOfShape": (20, 21, 23, 24),
    "Identity": (19, 21, 23, 24),
    "Reshape": (19, 21, 23, 24),
    "Shape": (19, 21, 23, 24),
    "Squeeze": (23, 24),
    "Unsqueeze": (21, 23, 24),
    "Transpose": (21, 23, 24),
    "Flatten": (21, 23, 24),
    "Equal": (19,),
    "GreaterOrEqual": (16,),
    "LessOrEqual": (16,),
    "IsInf": (20,),
    "IsNaN": (20,),
    "Elu": (22,),
    "Selu": (22,),
    "Softplus": (22,),
    "Softsign": (22,),
    "HardSigmoid": (22,),
    "HardSwish": (22,),
    "Dropout": (22,),
}
_REDUCE_18 = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
)

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softsign": nn.functional.softsign,
    "softplus": nn.functional.softplus,
}
_N_ACTIVATIONS = {"RNN": 1, "GRU": 2, "LSTM": 3}
_DEFAULT_ACTIVATIONS = {"RNN": ["Tanh"], "GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"]}
_N_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


class OnnxRecurrent(nn.Module):
    """The ONNX ``RNN``, ``GRU`` and ``LSTM`` ops (opsets 7-22) as a differentiable torch module.

    Follows the operator specification: gate order z, r, h (GRU) and i, o, f, c (LSTM),
    biases ``[Wb, Rb]``, ``linear_before_reset``, peepholes, ``input_forget``, ``clip``,
    forward/reverse/bidirectional. Not supported: ``sequence_lens`` and the batch-major
    ``layout=1`` (which onnxruntime, the reference the conversion is checked against, lacks).
    """

    def __init__(
        self,
        kind: str,
        hidden_size: int,
        *,
        direction: str = "forward",
        activations: list[str] | None = None,
        clip: float | None = None,
        linear_before_reset: int = 0,
        input_forget: int = 0,
        n_outputs: int = 3,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.hidden_size = hidden_size
        self.direction = direction
        self.clip = clip
        self.linear_before_reset = bool(linear_before_reset)
        self.input_forget = bool(input_forget)
        self.n_outputs = n_outputs
        n_directions = 2 if direction == "bidirectional" else 1
        names = activations or _DEFAULT_ACTIVATIONS[kind] * n_directions
        per_direction = _N_ACTIVATIONS[kind]
        if len(names) == per_direction and n_directions == 2:
            names = names * 2
        if len(names) != per_direction * n_directions:
            raise NotImplementedError(f"{kind} with {len(names)} activations for {n_directions} direction(s)")
        unknown = [n for n in names if n.lower() not in _ACTIVATIONS]
        if unknown:
            raise NotImplementedError(
                f"{kind} activation {unknown[0]} (supported: Tanh, Sigmoid, Relu, Softsign, Softplus)"
            )
        self.activation_names = [n.lower() for n in names]

    def forward(
        self,
        x: torch.Tensor,
        w: torch.Tensor,
        r: torch.Tensor,
        b: torch.Tensor | None = None,
        sequence_lens: torch.Tensor | None = None,
        initial_h: torch.Tensor | None = None,
        initial_c: torch.Tensor | None = None,
        p: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if sequence_lens is not None:
            raise NotImplementedError("sequence_lens (packed sequences) in an ONNX recurrent op")
        n_directions, size = w.shape[0], self.hidden_size
        zeros = x.new_zeros(n_directions, x.shape[1], size)
        initial_h = zeros if initial_h is None else initial_h
        initial_c = zeros if initial_c is None else initial_c
        ys, hs, cs = [], [], []
        for k in range(n_directions):
            per = _N_ACTIVATIONS[self.kind]
            acts = [_ACTIVATIONS[name] for name in self.activation_names[k * per : (k + 1) * per]]
            n_gate_rows = _N_GATES[self.kind] * size
            wb, rb = (b[k, :n_gate_rows], b[k, n_gate_rows:]) if b is not None else (None, None)
            xw = x @ w[k].transpose(0, 1)
            if wb is not None:
                xw = xw + wb
            reverse = self.direction == "reverse" or k == 1
            steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
            h, c = initial_h[k], initial_c[k]
            outputs: list[torch.Tensor | None] = [None] * x.shape[0]
            for t in steps:
                h, c = self._cell(xw[t], h, c, r[k], rb, None if p is None else p[k], acts)
                outputs[t] = h
            ys.append(torch.stack(outputs))  # type: ignore[arg-type]  # every step was filled
            hs.append(h)
            cs.append(c)
        results = (torch.stack(ys, 1), torch.stack(hs), torch.stack(cs))[: self.n_outputs]
        return results[0] if self.n_outputs == 1 else results

    def _pre(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.clip is None else z.clamp(-self.clip, self.clip)

    def _cell(
        self,
        xw: torch.Tensor,
        h: torch.Tensor,
        c: torch.Tensor,
        r: torch.Tensor,
        rb: torch.Tensor | None,
        p: torch.Tensor | None,
        acts: list[Callable[[torch.Tensor], torch.Tensor]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        size = self.hidden_size
        hr = h @ r.transpose(0, 1)
        if rb is not None:
            hr = hr + rb
        if self.kind == "RNN":
            return acts[0](self._pre(xw + hr)), c
        if self.kind == "GRU":
            f, g = acts
            z = f(self._pre(xw[:, :size] + hr[:, :size]))
            reset = f(self._pre(xw[:, size : 2 * size] + hr[:, size : 2 * size]))
            if self.linear_before_reset:
                candidate = g(self._pre(xw[:, 2 * size :] + reset * hr[:, 2 * size :]))
            else:
                recurrent = (reset * h) @ r[2 * size :].transpose(0, 1)
                if rb is not None:
                    recurrent = recurrent + rb[2 * size :]
                candidate = g(self._pre(xw[:, 2 * size :] + recurrent))
            return (1 - z) * candidate + z * h, c
        f, g, h_act = acts
        pre = xw + hr
        pi, po, pf = (None, None, None) if p is None else (p[:size], p[size : 2 * size], p[2 * size :])
        gate_i = pre[:, :size] + (0 if pi is None else pi * c)
        i = f(self._pre(gate_i))
        if self.input_forget:
            forget = 1 - i
        else:
            forget = f(self._pre(pre[:, 2 * size : 3 * size] + (0 if pf is None else pf * c)))
        c = forget * c + i * g(self._pre(pre[:, 3 * size :]))
        o = f(self._pre(pre[:, size : 2 * size] + (0 if po is None else po * c)))
        return o * h_act(c), c


class OnnxSplit18(nn.Module):
    """ONNX ``Split`` since opset 18: sizes from the ``split`` input, else ``num_outputs`` chunks (last smaller)."""

    def __init__(self, axis: int, num_outputs: int) -> None:
        super().__init__()
        self.axis = axis
        self.num_outputs = num_outputs

    def forward(self, x: torch.Tensor, split: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if split is not None:
            return tuple(torch.split(x, split.tolist(), dim=self.axis))
        return tuple(torch.split(x, math.ceil(x.shape[self.axis] / self.num_outputs), dim=self.axis))


class OnnxReshapeAllowZero(nn.Module):
    """ONNX ``Reshape`` with ``allowzero=1``: a 0 in the shape is a dimension of size 0, as in torch
    (the default ``allowzero=0`` copies the input's dimension instead)."""

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, shape.tolist())


@cache
def import_onnx2torch() -> types.ModuleType:
    """Import onnx2torch (without torchvision, which it needs only for NMS/RoiAlign) and register fpf's converters."""
    stubbed = importlib.util.find_spec("torchvision") is None
    if stubbed:
        sys.modules["torchvision"] = _torchvision_stub()
        sys.modules["torchvision.ops"] = sys.modules["torchvision"].ops
    try:
        import onnx2torch
    finally:
        if stubbed:
            # onnx2torch's nms/roialign modules keep their reference; nobody else sees the stub.
            del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    _register()
    return onnx2torch


def convert_onnx(proto: onnx.ModelProto) -> nn.Module:
    """``onnx2torch.convert`` with fpf's converters, loop bodies converted with the model's opsets."""
    onnx2torch = import_onnx2torch()
    opsets = MODEL_OPSETS.set(tuple(proto.opset_import))
    try:
        return onnx2torch.convert(proto)
    finally:
        MODEL_OPSETS.reset(opsets)


def _torchvision_stub() -> types.ModuleType:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise NotImplementedError("this ONNX op needs torchvision, which fpf does not install")

    stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.nms = ops.roi_align = ops.box_convert = unavailable
    stub.ops = ops
    return stub


def _register() -> None:
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value, onnx_mapping_from_node

    registered: dict[str, list[int]] = {}
    for description in _CONVERTER_REGISTRY:
        if description.domain == defs.ONNX_DOMAIN:
            registered.setdefault(description.operation_type, []).append(description.version)

    for op_type, versions in _TYPE_ONLY_REVISIONS.items():
        for version in versions:
            older = [v for v in registered.get(op_type, []) if v < version]
            key = OperationDescription(defs.ONNX_DOMAIN, op_type, version)
            if older and key not in _CONVERTER_REGISTRY:
                _CONVERTER_REGISTRY[key] = _CONVERTER_REGISTRY[
                    OperationDescription(defs.ONNX_DOMAIN, op_type, max(older))
                ]

    def reshape_allowing_zero(default):
        def convert(node, graph):
            if node.attributes.get("allowzero", 0) != 1:
                return default(node, graph)
            return OperationConverterResult(
                torch_module=OnnxReshapeAllowZero(), onnx_mapping=onnx_mapping_from_node(node)
            )

        return convert

    # torch's dynamo exporter writes Reshape with allowzero=1, which onnx2torch refuses.
    for key in [
        key for key in _CONVERTER_REGISTRY if key.domain == defs.ONNX_DOMAIN and key.operation_type == "Reshape"
    ]:
        _CONVERTER_REGISTRY[key] = reshape_allowing_zero(_CONVERTER_REGISTRY[key])

    from onnx2torch import convert

    for version in _since_versions("Loop", minimum=1):
        add_converter("Loop", version)(loop_converter(convert))
    for version in _since_versions("Scan", minimum=9):
        add_converter("Scan", version)(scan_converter(convert))

    def recurrent(node, graph):
        attributes = node.attributes
        if attributes.get("activation_alpha") or attributes.get("activation_beta"):
            raise NotImplementedError(f"{node.operation_type} with parametrised activations")
        if len(node.input_values) > 4 and node.input_values[4]:
            raise NotImplementedError(f"{node.operation_type} with a sequence_lens input (packed sequences)")
        if int(attributes.get("layout", 0)) != 0:
            raise NotImplementedError(f"{node.operation_type} with layout=1 (batch-major)")
        direction = attributes.get("direction", "forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        activations = [a.decode() if isinstance(a, bytes) else a for a in attributes.get("activations", [])]
        module = OnnxRecurrent(
            node.operation_type,
            int(attributes["hidden_size"]),
            direction=direction,
            activations=activations or None,
            clip=attributes.get("clip"),
            linear_before_reset=int(attributes.get("linear_before_reset", 0)),
            input_forget=int(attributes.get("input_forget", 0)),
            n_outputs=len(node.output_values),
        )
        return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))

    for op_type in _N_GATES:
        for version in _since_versions(op_type, minimum=7):
            add_converter(op_type, version)(recurrent)

    def split18(node, graph):
        attributes = node.attributes
        module = OnnxSplit18(
            int(attributes.get("axis", 0)), int(attributes.get("num_outputs", len(node.output_values)))
        )
        return OperationConverterResult(torch_module=module, onnx_mapping=onnx_mapping_from_node(node))

    add_converter("Split", 18)(split18)

    def reduce18(node, graph):
        keepdims = int(node.attributes.get("keepdims", 1))
        axes = None
        if len(node.input_values) > 1 and node.input_values[1]:
            try:
                axes = get_const_value(node.input_values[1], graph).tolist()
            except KeyError:
                raise NotImplementedError(f"{node.operation_type} with axes computed at run time") from None
        if not axes and node.attributes.get("noop_with_empty_axes", 0):
            raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes")
        module = OnnxReduceStaticAxes(node.operation_type, axes=axes, keepdims=keepdims)
        return OperationConverterResult(
            torch_module=module, onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values)
        )

    for op_type in _REDUCE_18:
        add_converter(op_type, 18)(reduce18)
        if op_type in ("ReduceMax", "ReduceMin"):
            _CONVERTER_REGISTRY[OperationDescription(defs.ONNX_DOMAIN, op_type, 20)] = reduce18


def _since_versions(op_type: str, minimum: int) -> list[int]:
    return sorted(
        {
            s.since_version
            for s in defs.get_all_schemas_with_history()
            if s.name == op_type and s.domain == defs.ONNX_DOMAIN and s.since_version >= minimum
        }
    )


__all__ = ["OnnxRecurrent", "OnnxSplit18", "convert_onnx", "import_onnx2torch"]
