"""The ONNX ``Loop`` and ``Scan`` ops for onnx2torch: a step exported inside a loop of length 1.

onnx2torch has no converters for ops with subgraphs. Here the body graph is converted
on its own (with the model's opsets) into a torch module, and the loop runs it in
Python, so autograd differentiates through it. Values the body reads from the outer
graph (weights, the input u) become extra inputs of the converted body; weights are
copied into it as constants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import onnx
import torch
from torch import nn

#: The opsets of the model being converted: a body graph is converted with the same ones.
MODEL_OPSETS: ContextVar[tuple[onnx.OperatorSetIdProto, ...]] = ContextVar("MODEL_OPSETS", default=())


class OnnxLoop(nn.Module):
    """ONNX ``Loop`` with a trip count and a condition: carried values and stacked scan outputs."""

    def __init__(self, body: nn.Module, n_carried: int, n_scan_outputs: int) -> None:
        super().__init__()
        self.body = body
        self.n_carried = n_carried
        self.n_scan_outputs = n_scan_outputs

    def forward(self, trip: torch.Tensor, condition: torch.Tensor, *values: torch.Tensor) -> Any:
        carried, captured = list(values[: self.n_carried]), values[self.n_carried :]
        scans: list[list[torch.Tensor]] = [[] for _ in range(self.n_scan_outputs)]
        keep, i = bool(condition), 0
        while i < int(trip) and keep:
            out = _as_tuple(self.body(torch.tensor(i), torch.tensor(keep), *carried, *captured))
            keep = bool(out[0])
            carried = list(out[1 : 1 + self.n_carried])
            for scan, value in zip(scans, out[1 + self.n_carried :], strict=True):
                scan.append(value)
            i += 1
        return _outputs([*carried, *(torch.stack(scan) for scan in scans)])


class OnnxScan(nn.Module):
    """ONNX ``Scan`` (opset 9+) along axis 0, forward: state variables and stacked scan outputs."""

    def __init__(self, body: nn.Module, n_states: int, n_scan_inputs: int) -> None:
        super().__init__()
        self.body = body
        self.n_states = n_states
        self.n_scan_inputs = n_scan_inputs

    def forward(self, *values: torch.Tensor) -> Any:
        states = list(values[: self.n_states])
        sequences = values[self.n_states : self.n_states + self.n_scan_inputs]
        captured = values[self.n_states + self.n_scan_inputs :]
        scans: list[list[torch.Tensor]] = []
        for t in range(sequences[0].shape[0]):
            out = _as_tuple(self.body(*states, *(sequence[t] for sequence in sequences), *captured))
            states = list(out[: self.n_states])
            scans = scans or [[] for _ in out[self.n_states :]]
            for scan, value in zip(scans, out[self.n_states :], strict=True):
                scan.append(value)
        return _outputs([*states, *(torch.stack(scan) for scan in scans)])


def loop_converter(convert: Callable[[onnx.ModelProto], nn.Module]) -> Callable[[Any, Any], Any]:
    """The onnx2torch converter of ``Loop``, converting bodies with ``convert``."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    def converter(node: Any, graph: Any) -> Any:
        inputs = list(node.input_values)
        if len(inputs) < 2 or not inputs[0] or not inputs[1]:
            raise NotImplementedError("Loop without a trip count or condition (fpf runs loops of fixed length)")
        body_graph = _graph(node.attributes["body"])
        body, passed = _body_model(body_graph, graph)
        n_carried = len(inputs) - 2
        module = OnnxLoop(convert(body), n_carried, len(body_graph.output) - 1 - n_carried)
        mapping = OnnxMapping(inputs=tuple(inputs) + passed, outputs=node.output_values)
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    return converter


def scan_converter(convert: Callable[[onnx.ModelProto], nn.Module]) -> Callable[[Any, Any], Any]:
    """The onnx2torch converter of ``Scan`` (opset 9+; axis 0, forward only)."""
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    def converter(node: Any, graph: Any) -> Any:
        attributes = node.attributes
        n_scan = int(attributes["num_scan_inputs"])
        for key in ("scan_input_axes", "scan_input_directions", "scan_output_axes", "scan_output_directions"):
            if any(int(v) != 0 for v in attributes.get(key, [])):
                raise NotImplementedError(f"Scan with {key} other than 0 (fpf scans forward along axis 0)")
        body, passed = _body_model(_graph(attributes["body"]), graph)
        inputs = list(node.input_values)
        module = OnnxScan(convert(body), len(inputs) - n_scan, n_scan)
        mapping = OnnxMapping(inputs=tuple(inputs) + passed, outputs=node.output_values)
        return OperationConverterResult(torch_module=module, onnx_mapping=mapping)

    return converter


def _body_model(body: onnx.GraphProto, outer: Any) -> tuple[onnx.ModelProto, tuple[str, ...]]:
    """The body as a model of its own, and the outer values to pass it after its declared inputs:
    outer weights are copied in as initializers, other outer values it reads become extra inputs
    (typed as the outer graph's shape inference found them)."""
    graph = onnx.GraphProto()
    graph.CopyFrom(body)
    passed = []
    for name in _free_names(body):
        if name in outer.initializers:
            graph.initializer.append(outer.initializers[name].proto)
        elif name in outer.value_info:
            graph.input.append(outer.value_info[name])
            passed.append(name)
        else:
            raise NotImplementedError(f"a loop body reads {name!r}, whose type the outer graph does not declare")
    return onnx.helper.make_model(graph, opset_imports=list(MODEL_OPSETS.get())), tuple(passed)


def _graph(value: Any) -> onnx.GraphProto:
    """A graph attribute as onnx2torch hands it over (the AttributeProto itself) or as a GraphProto."""
    return value.g if isinstance(value, onnx.AttributeProto) else value


def _free_names(graph: onnx.GraphProto) -> list[str]:
    """Names a graph (or its subgraphs) reads without defining them: values of the enclosing scope."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    free: list[str] = []
    for node in graph.node:
        used = list(node.input) + [name for sub in _subgraphs(node) for name in _free_names(sub)]
        free.extend(name for name in used if name and name not in defined and name not in free)
        defined.update(node.output)
    return free


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        yield from attribute.graphs


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _outputs(values: list[torch.Tensor]) -> Any:
    return values[0] if len(values) == 1 else tuple(values)


__all__ = ["MODEL_OPSETS", "OnnxLoop", "OnnxScan", "loop_converter", "scan_converter"]
