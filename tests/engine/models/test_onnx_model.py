"""load_onnx: real torch exports (legacy and default exporter, step graphs and recurrent ops) and every refusal."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import export_nets as nets
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnx import helper as oh

from fpf_client.errors import InvalidModel
from workers.engine.models.onnx_model import load_onnx, looks_like_onnx

torch.set_num_threads(1)

# (kind, network form, exporter): step graphs of every kind with both exporters, and the
# full recurrent layers (ONNX RNN/GRU/LSTM ops) with both.
EXPORTS = [(kind, "cell", exporter) for kind in nets.KINDS for exporter in ("legacy", "dynamo")] + [
    (kind, "layer", exporter) for kind in ("rnn", "gru", "lstm") for exporter in ("legacy", "dynamo")
]


@pytest.fixture(scope="module")
def exported(shared_exports: nets.SharedExports) -> dict[tuple[str, str, str], Path]:
    return {(kind, form, exporter): shared_exports.onnx(kind, form, exporter) for kind, form, exporter in EXPORTS}


def _states(kind: str, n: int = 7, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, nets.n_states(kind), generator=g), torch.randn(n, nets.N_INPUTS, generator=g)


def _central_differences(fn, x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(n, out, in) Jacobian of a batched fn by float64 central differences."""
    columns = [(fn(x + eps * e) - fn(x - eps * e)) / (2 * eps) for e in torch.eye(x.shape[1], dtype=x.dtype)]
    return torch.stack(columns, dim=2)


@pytest.mark.parametrize("kind, form, exporter", EXPORTS)
def test_export_runs_with_exact_jacobians(exported: dict, kind: str, form: str, exporter: str) -> None:
    model = load_onnx(exported[kind, form, exporter], dynamics=nets.dynamics(kind))
    assert (model.n_states, model.n_inputs, model.dynamics) == (nets.n_states(kind), nets.N_INPUTS, nets.dynamics(kind))
    assert model.fn.validation["max_abs_diff"] < 1e-5
    reference = nets.Cell(kind, nets.weights(kind))
    h, u = _states(kind)

    # Same map and same Jacobians as the torch network (float32).
    torch.testing.assert_close(model.step(h, u), reference(u, h), atol=1e-5, rtol=1e-5)
    J_ref = torch.func.vmap(torch.func.jacrev(lambda x, v: reference(v[None], x[None])[0]))(h, u)
    dFdu_ref = torch.func.vmap(torch.func.jacrev(lambda v, x: reference(v[None], x[None])[0]))(u, h)
    torch.testing.assert_close(model.jacobian_states(h, u), J_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.jacobian_inputs(h, u), dFdu_ref, atol=1e-5, rtol=1e-5)

    # In float64 the converted graph's Jacobians match its own finite differences.
    model64 = model.to(dtype=torch.float64)
    h64, u64 = h.double(), u.double()
    J_fd = _central_differences(lambda x: model64.step(x, u64), h64)
    dFdu_fd = _central_differences(lambda v: model64.step(h64, v), u64)
    torch.testing.assert_close(model64.jacobian_states(h64, u64), J_fd, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(model64.jacobian_inputs(h64, u64), dFdu_fd, atol=1e-7, rtol=1e-6)

    # Matrix-free products agree with the Jacobian.
    v = torch.randn_like(h)
    _, Jv = model.jvp(h, u, v)
    _, wJ = model.vjp(h, u, v)
    J = model.jacobian_states(h, u)
    torch.testing.assert_close(Jv, torch.einsum("nij,nj->ni", J, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wJ, torch.einsum("nij,ni->nj", J, v), atol=1e-5, rtol=1e-5)


def test_detection(exported: dict, tmp_path: Path) -> None:
    assert looks_like_onnx(exported["gru", "layer", "dynamo"])
    not_onnx = tmp_path / "x.pt"
    torch.jit.save(torch.jit.script(nets.Cell("rnn", nets.weights("rnn"))), str(not_onnx))
    assert not looks_like_onnx(not_onnx)


# --- naming -----------------------------------------------------------------------


def _export_named(
    tmp_path: Path, input_names: list[str], output_names: list[str] | None = None, dynamic: bool = True
) -> Path:
    module = nets.Cell("rnn", nets.weights("rnn"))
    path = tmp_path / "named.onnx"
    args = (torch.zeros(2, nets.N_INPUTS), torch.zeros(2, nets.N_UNITS))
    output_names = output_names or ["out"]
    axes = {name: {0: "n"} for name in [*input_names, *output_names]} if dynamic else None
    torch.onnx.export(
        module,
        args,
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=axes,
    )
    return path


def test_inputs_found_by_alias_and_elimination(tmp_path: Path) -> None:
    model = load_onnx(_export_named(tmp_path, ["inputs", "x"]))
    h, u = _states("rnn")
    torch.testing.assert_close(model.step(h, u), nets.Cell("rnn", nets.weights("rnn"))(u, h))


def test_ambiguous_inputs_say_how_to_name_them(tmp_path: Path) -> None:
    path = _export_named(tmp_path, ["a", "b"])
    with pytest.raises(InvalidModel, match=r"input_names=\['u', 'h'\]"):
        load_onnx(path)
    model = load_onnx(path, input_name="a", state_name="b")
    h, u = _states("rnn")
    torch.testing.assert_close(model.step(h, u), nets.Cell("rnn", nets.weights("rnn"))(u, h))
    with pytest.raises(InvalidModel, match="no input 'c'"):
        load_onnx(path, input_name="c")


def test_fixed_batch_size_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="fixed batch size"):
        load_onnx(_export_named(tmp_path, ["u", "h"], dynamic=False))


def test_size_hints_are_checked(tmp_path: Path) -> None:
    path = _export_named(tmp_path, ["u", "h"])
    assert load_onnx(path, n_states=nets.N_UNITS, n_inputs=nets.N_INPUTS).n_states == nets.N_UNITS
    with pytest.raises(InvalidModel, match="n_states=5 was given"):
        load_onnx(path, n_states=5)


def test_wrong_output_shape_refused(tmp_path: Path) -> None:
    class Summed(torch.nn.Module):
        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h).sum(1, keepdim=True) + u[:, :1]

    path = tmp_path / "summed.onnx"
    torch.onnx.export(
        Summed(),
        (torch.zeros(2, 3), torch.zeros(2, 4)),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["u", "h"],
        output_names=["y"],
        dynamic_axes={"u": {0: "n"}, "h": {0: "n"}},
    )
    with pytest.raises(InvalidModel, match=r"shape \(16, 1\)"):
        load_onnx(path)


# --- crafted refusals ---------------------------------------------------------------


def _with_external_data(tmp_path: Path, location: str) -> Path:
    """A step graph whose weight matrix is stored in an external file at ``location``."""
    proto = onnx.load(str(_export_named(tmp_path, ["u", "h"])))
    onnx.external_data_helper.convert_model_to_external_data(
        proto, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0
    )
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(proto, str(folder / "model.onnx"))
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(proto, str(folder / "model.onnx"))
    return folder


def _zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, file.name)
    return path


def test_external_data_inside_an_archive_loads(tmp_path: Path) -> None:
    folder = _with_external_data(tmp_path, "weights.bin")
    assert looks_like_onnx(_zip_folder(folder, tmp_path / "model.zip")) and not looks_like_onnx(folder)
    model = load_onnx(tmp_path / "model.zip")
    h, u = _states("rnn")
    torch.testing.assert_close(model.step(h, u), nets.Cell("rnn", nets.weights("rnn"))(u, h))


def test_external_data_of_a_single_file_refused(tmp_path: Path) -> None:
    folder = _with_external_data(tmp_path, "weights.bin")
    with pytest.raises(InvalidModel, match="must embed its weights"):
        load_onnx(folder / "model.onnx")


@pytest.mark.parametrize("location", ["../weights.bin", "/etc/hostname", "sub/../../weights.bin"])
def test_external_data_leaving_the_upload_refused(tmp_path: Path, location: str) -> None:
    folder = _with_external_data(tmp_path, location)
    shutil.copy(folder / "weights.bin", tmp_path / "weights.bin")  # present outside the upload: still refused
    with pytest.raises(InvalidModel, match="outside the upload"):
        load_onnx(_zip_folder(folder, tmp_path / "model.zip"))


def test_external_data_file_missing_refused(tmp_path: Path) -> None:
    folder = _with_external_data(tmp_path, "other.bin")
    with pytest.raises(InvalidModel, match="missing external data"):
        load_onnx(_zip_folder(folder, tmp_path / "model.zip"))


def _step_graph(
    nodes: list[onnx.NodeProto], opsets: list[tuple[str, int]], inits: list[onnx.TensorProto] | None = None
) -> onnx.ModelProto:
    graph = oh.make_graph(
        nodes,
        "step",
        [
            oh.make_tensor_value_info("u", TensorProto.FLOAT, ["n", 2]),
            oh.make_tensor_value_info("h", TensorProto.FLOAT, ["n", 2]),
        ],
        [oh.make_tensor_value_info("h_next", TensorProto.FLOAT, ["n", 2])],
        inits or [],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid(d, v) for d, v in opsets])


@pytest.mark.parametrize("domain", ["com.example.evil", "com.microsoft", "ai.onnx.ml"])
def test_custom_op_domains_refused(tmp_path: Path, domain: str) -> None:
    nodes = [oh.make_node("Add", ["u", "h"], ["s"]), oh.make_node("Evil", ["s"], ["h_next"], domain=domain)]
    path = tmp_path / "custom.onnx"
    onnx.save_model(_step_graph(nodes, [("", 17), (domain, 1)]), str(path))
    with pytest.raises(InvalidModel, match=f"custom-op domain.*{domain}"):
        load_onnx(path)


def test_custom_op_hidden_in_a_subgraph_refused(tmp_path: Path) -> None:
    branch = oh.make_graph(
        [oh.make_node("Evil", ["h"], ["y"], domain="com.example")],
        "b",
        [],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )
    nodes = [
        oh.make_node("ReduceSum", ["h"], ["s"], keepdims=0),
        oh.make_node("Cast", ["s"], ["c"], to=TensorProto.BOOL),
        oh.make_node("If", ["c"], ["h_next"], then_branch=branch, else_branch=branch),
    ]
    path = tmp_path / "sub.onnx"
    onnx.save_model(_step_graph(nodes, [("", 17), ("com.example", 1)]), str(path))
    with pytest.raises(InvalidModel, match="custom-op domain"):
        load_onnx(path)


def test_conversion_that_disagrees_with_onnxruntime_refused(tmp_path: Path) -> None:
    """onnx2torch's CumSum differs from the ONNX specification (and onnxruntime): validation catches it."""
    nodes = [oh.make_node("CumSum", ["h", "axis"], ["c"]), oh.make_node("Add", ["c", "u"], ["h_next"])]
    axis = oh.make_tensor("axis", TensorProto.INT64, [], [1])
    path = tmp_path / "cumsum.onnx"
    onnx.save_model(_step_graph(nodes, [("", 17)], [axis]), str(path))
    with pytest.raises(InvalidModel, match="differs from onnxruntime"):
        load_onnx(path)


def test_unsupported_op_refused_plainly(tmp_path: Path) -> None:
    nodes = [oh.make_node("Shrink", ["h"], ["s"], lambd=0.5), oh.make_node("Add", ["s", "u"], ["h_next"])]
    path = tmp_path / "shrink.onnx"
    onnx.save_model(_step_graph(nodes, [("", 17)]), str(path))
    with pytest.raises(InvalidModel, match="cannot run this ONNX graph.*Shrink"):
        load_onnx(path)


def test_not_onnx_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(InvalidModel):
        load_onnx(path)
