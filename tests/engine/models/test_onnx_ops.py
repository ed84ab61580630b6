"""fpf's onnx2torch converters (RNN/GRU/LSTM ops, Split-18, opset-18 reductions) against onnxruntime.

onnxruntime implements the ONNX operator specification independently; every variant
of each op is built as a one-node graph and both runtimes get the same random inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto
from onnx import helper as oh

from workers.engine.models.onnx_ops import convert_onnx, import_onnx2torch

SEQ, BATCH, INPUT, HIDDEN = 3, 4, 2, 5
_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, feeds)
    converted = import_onnx2torch().convert(model)
    with torch.no_grad():
        out = converted(*(torch.from_numpy(feeds[i.name]) for i in model.graph.input))
    out = list(out) if isinstance(out, (tuple, list)) else [out]
    return reference, [o.numpy() for o in out]


def _recurrent_model(
    kind: str, *, direction: str = "forward", peepholes: bool = False, opset: int = 17, **attributes: object
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    n_dir = 2 if direction == "bidirectional" else 1
    rows = _GATES[kind] * HIDDEN
    x_shape, h_shape = [SEQ, BATCH, INPUT], [n_dir, BATCH, HIDDEN]
    inits = {
        "W": rng.normal(0, 0.6, (n_dir, rows, INPUT)),
        "R": rng.normal(0, 0.6, (n_dir, rows, HIDDEN)),
        "B": rng.normal(0, 0.3, (n_dir, 2 * rows)),
    }
    if peepholes:
        inits["P"] = rng.normal(0, 0.5, (n_dir, 3 * HIDDEN))
    feeds = {"X": rng.normal(0, 1, x_shape), "H0": rng.normal(0, 0.5, h_shape)}
    if kind == "LSTM":
        feeds["C0"] = rng.normal(0, 0.5, h_shape)
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    node_inputs = ["X", "W", "R", "B", "", "H0"] + (["C0"] if kind == "LSTM" else [])
    if peepholes:
        node_inputs.append("P")
    outputs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    node = oh.make_node(kind, node_inputs, outputs, hidden_size=HIDDEN, direction=direction, **attributes)
    graph = oh.make_graph(
        [node],
        "g",
        [oh.make_tensor_value_info(name, TensorProto.FLOAT, value.shape) for name, value in feeds.items()],
        [oh.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        [
            oh.make_tensor(name, TensorProto.FLOAT, value.shape, value.astype(np.float32).ravel())
            for name, value in inits.items()
        ],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)]), feeds


@pytest.mark.parametrize(
    "kind, options",
    [
        ("RNN", {}),
        ("RNN", {"activations": ["Relu"]}),
        ("RNN", {"direction": "reverse"}),
        ("RNN", {"direction": "bidirectional"}),
        ("GRU", {"linear_before_reset": 1}),
        ("GRU", {"linear_before_reset": 0}),
        ("GRU", {"direction": "bidirectional", "clip": 0.5}),
        ("GRU", {"direction": "reverse", "opset": 22}),
        ("LSTM", {}),
        ("LSTM", {"peepholes": True}),
        ("LSTM", {"input_forget": 1, "direction": "reverse"}),
        ("LSTM", {"direction": "bidirectional", "peepholes": True, "clip": 1.0}),
    ],
)
def test_recurrent_ops_match_onnxruntime(kind: str, options: dict[str, object]) -> None:
    model, feeds = _recurrent_model(kind, **options)
    reference, converted = _run_both(model, feeds)
    assert len(converted) == len(reference)
    for ref, got in zip(reference, converted):
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=2e-6, rtol=1e-5)


def test_recurrent_op_variants_without_a_reference_are_refused() -> None:
    model, _ = _recurrent_model("GRU")
    model.graph.node[0].input[4] = "lens"
    model.graph.initializer.append(oh.make_tensor("lens", TensorProto.INT32, [BATCH], [SEQ] * BATCH))
    with pytest.raises(NotImplementedError, match="sequence_lens"):
        import_onnx2torch().convert(model)
    model, _ = _recurrent_model("LSTM")
    model.graph.node[0].attribute.append(oh.make_attribute("layout", 1))
    with pytest.raises(NotImplementedError, match="layout=1"):
        import_onnx2torch().convert(model)


@pytest.mark.parametrize("size, n_out, split", [(7, 3, None), (6, 3, None), (7, 2, [5, 2])])
def test_split_18(size: int, n_out: int, split: list[int] | None) -> None:
    inputs, inits = ["x"], []
    if split is not None:
        inputs.append("split")
        inits.append(oh.make_tensor("split", TensorProto.INT64, [len(split)], split))
    attrs = {} if split is not None else {"num_outputs": n_out}
    outputs = [f"y{i}" for i in range(n_out)]
    graph = oh.make_graph(
        [oh.make_node("Split", inputs, outputs, axis=1, **attrs)],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["n", size])],
        [oh.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    x = np.random.default_rng(0).normal(size=(4, size)).astype(np.float32)
    reference, converted = _run_both(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)]), {"x": x})
    for ref, got in zip(reference, converted):
        np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
@pytest.mark.parametrize("opset", [18, 20])
def test_reductions_with_axes_input(op: str, opset: int) -> None:
    graph = oh.make_graph(
        [oh.make_node(op, ["x", "axes"], ["y"], keepdims=0)],
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [oh.make_tensor("axes", TensorProto.INT64, [1], [2])],
    )
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    reference, converted = _run_both(oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)]), {"x": x})
    np.testing.assert_allclose(converted[0], reference[0], rtol=1e-6, atol=1e-6)


def test_type_only_revisions_convert() -> None:
    """Ops whose opset 19-23 revisions only added tensor types run as their older selves."""
    nodes = [
        oh.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT),
        oh.make_node("Shape", ["a"], ["s"]),
        oh.make_node("Reshape", ["a", "s"], ["b"]),
        oh.make_node("Identity", ["b"], ["y"]),
    ]
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    reference, converted = _run_both(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 23)]), {"x": x})
    np.testing.assert_array_equal(converted[0], reference[0])


def test_torchvision_stays_out() -> None:
    import importlib.util
    import sys

    import_onnx2torch()
    assert "torchvision" not in sys.modules
    assert importlib.util.find_spec("torchvision") is None


# --- a step wrapped in Loop / Scan of length 1 ------------------------------------------------------

_D, _M = 4, 3


def _value(name: str, size: int) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, TensorProto.FLOAT, ["n", size])


def _tanh_step(h: str, u: str, out: str, prefix: str) -> list[onnx.NodeProto]:
    """tanh(h W + u U), W and U initializers of the outer graph (read by the loop body from outside)."""
    return [
        oh.make_node("MatMul", [h, "W"], [f"{prefix}hw"]),
        oh.make_node("MatMul", [u, "U"], [f"{prefix}uu"]),
        oh.make_node("Add", [f"{prefix}hw", f"{prefix}uu"], [f"{prefix}s"]),
        oh.make_node("Tanh", [f"{prefix}s"], [out]),
    ]


def _weights() -> list[onnx.TensorProto]:
    rng = np.random.default_rng(0)
    return [
        onnx.numpy_helper.from_array(rng.normal(0, 0.8, (_D, _D)).astype(np.float32), "W"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.5, (_M, _D)).astype(np.float32), "U"),
    ]


def _loop_model() -> onnx.ModelProto:
    """The step as the body of Loop(trip count 1); the body reads the graph input u from the outer scope."""
    body = oh.make_graph(
        [oh.make_node("Identity", ["cond_in"], ["cond_out"]), *_tanh_step("h_in", "u", "h_out", "b_")],
        "body",
        [
            oh.make_tensor_value_info("i", TensorProto.INT64, []),
            oh.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            _value("h_in", _D),
        ],
        [oh.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _value("h_out", _D)],
    )
    nodes = [
        oh.make_node("Constant", [], ["trip"], value=oh.make_tensor("t", TensorProto.INT64, [], [1])),
        oh.make_node("Constant", [], ["go"], value=oh.make_tensor("g", TensorProto.BOOL, [], [True])),
        oh.make_node("Loop", ["trip", "go", "h"], ["h_next"], body=body),
    ]
    graph = oh.make_graph(nodes, "loop", [_value("u", _M), _value("h", _D)], [_value("h_next", _D)], _weights())
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


def _scan_model() -> onnx.ModelProto:
    """The step as the body of a Scan over the length-1 sequence u[None], h the carried state."""
    body = oh.make_graph(
        _tanh_step("h_in", "u_t", "h_out", "s_"), "body", [_value("h_in", _D), _value("u_t", _M)], [_value("h_out", _D)]
    )
    nodes = [
        oh.make_node("Unsqueeze", ["u", "axis"], ["u_seq"]),
        oh.make_node("Scan", ["h", "u_seq"], ["h_next"], body=body, num_scan_inputs=1),
    ]
    axis = onnx.numpy_helper.from_array(np.array([0], np.int64), "axis")
    graph = oh.make_graph(
        nodes, "scan", [_value("u", _M), _value("h", _D)], [_value("h_next", _D)], [*_weights(), axis]
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])


@pytest.mark.parametrize("make", [_loop_model, _scan_model])
def test_a_step_inside_a_loop_of_length_one_converts_exactly(make) -> None:
    model = make()
    onnx.checker.check_model(model)
    converted = convert_onnx(model)
    rng = np.random.default_rng(1)
    u, h = rng.normal(size=(5, _M)).astype(np.float32), rng.normal(size=(5, _D)).astype(np.float32)
    (expected,) = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"u": u, "h": h}
    )
    hx = torch.from_numpy(h).requires_grad_(True)
    out = converted(torch.from_numpy(u), hx)
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-6)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    jacobian = torch.autograd.functional.jacobian(lambda x: converted(torch.from_numpy(u), x).sum(0), hx)
    analytic = (1 - expected**2)[:, :, None] * weights["W"].T[None]
    np.testing.assert_allclose(jacobian.permute(1, 0, 2).numpy(), analytic, atol=1e-5)
