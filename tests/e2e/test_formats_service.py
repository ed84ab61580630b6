"""TorchScript, ONNX and SavedModel through the real service: the same networks give the same fixed points,
and every refusal of a crafted upload reaches the user as a plain reason.

The tanh RNN, GRU, LSTM and continuous-time rate network of tests/support/export_nets.py are
exported as TorchScript (scripted, traced), ONNX (legacy and default exporter; step graphs
and the ONNX recurrent ops) and SavedModel (.zip, .tar.gz), uploaded over HTTP and solved
by one job each with the same initial states. The reference is the torch module itself,
solved in this process (float32, like every job).
"""

from __future__ import annotations

import io
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import export_nets as nets
import httpx
import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from onnx import helper as oh
from service_harness import LiveService, grpc_server

from fpf_client import Client, FixedPoints
from fpf_client.errors import InvalidModel, InvalidRequest
from workers.engine import as_step_model, find_fixed_points

pytestmark = pytest.mark.integration
torch.set_num_threads(1)

TOL = 1e-5
OPTIONS = {"method": "auto", "device": "cpu", "dtype": "float32"}
N_INITIAL = 48
WAIT_S = 240


def _initial_states(kind: str) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 0.5, (N_INITIAL, nets.n_states(kind))).astype(np.float32)


def _inputs() -> np.ndarray:
    return np.zeros((1, nets.N_INPUTS), np.float32)


def _pack(directory: Path, path: Path) -> Path:
    """``directory`` as ``path`` (.zip or .tar.gz), the directory itself at the archive's top."""
    kind = "gztar" if path.name.endswith(".tar.gz") else "zip"
    shutil.make_archive(str(path).removesuffix(".tar.gz").removesuffix(".zip"), kind, directory.parent, directory.name)
    return path


def _exports(kind: str, root: Path, shared: nets.SharedExports) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Every export of one network: name -> (file, upload form fields)."""
    w, dynamics = nets.weights(kind), nets.dynamics(kind)
    cell = nets.Cell(kind, w)
    sizes = {"n_states": nets.n_states(kind), "n_inputs": nets.N_INPUTS}
    files: dict[str, tuple[Path, dict[str, Any]]] = {}
    scripted, traced = root / f"{kind}-scripted.pt", root / f"{kind}-traced.pt"
    torch.jit.save(torch.jit.script(cell), str(scripted))
    example = (torch.randn(2, nets.N_INPUTS), torch.randn(2, nets.n_states(kind)))
    torch.jit.save(torch.jit.trace(nets.Cell(kind, w), example), str(traced))
    files["torchscript-scripted"] = (scripted, {**sizes, "format": "torchscript"})
    files["torchscript-traced"] = (traced, sizes)  # format detected
    for form in ("cell",) if kind == "rate" else ("cell", "layer"):
        for exporter in ("legacy", "dynamo"):
            files[f"onnx-{form}-{exporter}"] = (shared.onnx(kind, form, exporter), {})
    saved = shared.savedmodel(kind)
    files["savedmodel-zip"] = (_pack(saved, root / f"{kind}-sm.zip"), {"format": "savedmodel"})
    files["savedmodel-tar.gz"] = (_pack(saved, root / f"{kind}-sm.tar.gz"), {})
    return {name: (path, {**fields, "dynamics": dynamics}) for name, (path, fields) in files.items()}


def _upload(http: httpx.Client, path: Path, fields: dict[str, Any]) -> httpx.Response:
    with open(path, "rb") as f:
        return http.post("/v1/models", files={"file": (path.name, f)}, data={k: str(v) for k, v in fields.items()})


@pytest.fixture(scope="module")
def solved(
    live_service: LiveService, tmp_path_factory: pytest.TempPathFactory, shared_exports: nets.SharedExports
) -> dict[str, dict[str, tuple[dict[str, Any], FixedPoints]]]:
    """kind -> export -> (its ready model record, the fixed points its job found)."""
    root = tmp_path_factory.mktemp("exports")
    exports = {kind: _exports(kind, root, shared_exports) for kind in nets.KINDS}
    with live_service.client() as http:
        uploads = {}
        for kind, files in exports.items():
            for name, (path, fields) in files.items():
                response = _upload(http, path, fields)
                assert response.status_code == 202, (kind, name, response.text)
                uploads[kind, name] = response.json()["id"]
        models = {key: live_service.wait_model(model_id, WAIT_S) for key, model_id in uploads.items()}
        for key, model in models.items():
            assert model["status"] == "ready", (key, model["error"])
        jobs = {}
        for (kind, name), model in models.items():
            body = {
                "model_id": model["id"],
                "initial_states": _initial_states(kind).tolist(),
                "inputs": _inputs().tolist(),
                "options": OPTIONS,
            }
            response = http.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            jobs[kind, name] = response.json()["id"]
        results: dict[str, dict[str, tuple[dict[str, Any], FixedPoints]]] = {kind: {} for kind in nets.KINDS}
        for (kind, name), job_id in jobs.items():
            job = live_service.wait_job(job_id, WAIT_S)
            assert job["status"] == "succeeded", (kind, name, job["error"])
            result = http.get(f"/v1/jobs/{job_id}/result", params={"format": "npz"}).raise_for_status()
            results[kind][name] = (models[kind, name], FixedPoints.load(result.content))
    return results


def _sorted_eigenvalues(values: np.ndarray) -> np.ndarray:
    return values[np.lexsort((values.imag.round(4), values.real.round(4)))]


@pytest.mark.parametrize("kind", nets.KINDS)
def test_every_format_gives_the_same_fixed_points(solved: dict, kind: str) -> None:
    reference = find_fixed_points(
        as_step_model(
            nets.Cell(kind, nets.weights(kind)),
            dynamics=nets.dynamics(kind),
            n_states=nets.n_states(kind),
            n_inputs=nets.N_INPUTS,
        ),
        _initial_states(kind),
        _inputs(),
        **OPTIONS,
    )
    assert reference.n >= 1 and not reference.is_nonisolated.any()
    expected_exports = 8 if kind != "rate" else 6
    assert len(solved[kind]) == expected_exports
    for name, (model, found) in solved[kind].items():
        assert model["format"] == name.split("-")[0] and model["dynamics"] == nets.dynamics(kind), name
        assert (model["n_states"], model["n_inputs"]) == (nets.n_states(kind), nets.N_INPUTS), name
        assert found.n == reference.n, f"{name}: {found.n} fixed points, torch has {reference.n}"
        match = [int(np.argmin(np.abs(found.xstar - x).max(axis=1))) for x in reference.xstar]
        assert sorted(match) == list(range(found.n)), f"{name}: fixed points do not pair up"
        np.testing.assert_allclose(found.xstar[match], reference.xstar, atol=TOL, err_msg=name)
        np.testing.assert_allclose(found.J_xstar[match], reference.J_xstar, atol=TOL, err_msg=name)
        np.testing.assert_allclose(found.dFdu[match], reference.dFdu, atol=TOL, err_msg=name)
        for got, want in zip(found.eigval_J_xstar[match], reference.eigval_J_xstar):
            np.testing.assert_allclose(_sorted_eigenvalues(got), _sorted_eigenvalues(want), atol=TOL, err_msg=name)
        np.testing.assert_array_equal(found.is_stable[match], reference.is_stable, err_msg=name)


def test_onnx_records_report_the_onnxruntime_check(solved: dict) -> None:
    for kind, exports in solved.items():
        for name, (model, _) in exports.items():
            validation = model["validation"]
            if model["format"] != "onnx":
                assert validation is None, (kind, name)
                continue
            assert 0 <= validation["max_abs_diff"] <= validation["tolerance"], (kind, name, validation)
            assert validation["max_abs_diff"] < TOL and validation["reference"].startswith("onnxruntime")


# --- refusals ---------------------------------------------------------------------------------


@pytest.fixture
def http(live_service: LiveService) -> Iterator[httpx.Client]:
    with live_service.client() as client:
        yield client


def _refused(live_service: LiveService, http: httpx.Client, path: Path, **fields: Any) -> str:
    """Upload a crafted file; the detail of the invalid model's problem document."""
    response = _upload(http, path, fields)
    assert response.status_code in (200, 202), response.text
    model = live_service.wait_model(response.json()["id"], WAIT_S)
    assert model["status"] == "invalid", model
    assert model["error"]["code"] == "invalid_model" and model["validation"] is None
    return model["error"]["detail"]


def _tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def test_unsafe_archives_refused(live_service: LiveService, http: httpx.Client, tmp_path: Path) -> None:
    pb = tarfile.TarInfo("sm/saved_model.pb")
    climb = _tar_gz(tmp_path / "climb.tar.gz", [(pb, b"pb"), (tarfile.TarInfo("sm/../../evil"), b"x")])
    assert "points outside the archive ('..')" in _refused(live_service, http, climb)

    link = tarfile.TarInfo("sm/variables")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    linked = _tar_gz(tmp_path / "link.tar.gz", [(pb, b"pb"), (link, None)])
    assert "'sm/variables' is a link" in _refused(live_service, http, linked)

    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("sm/saved_model.pb", bytes(8 << 20))
    assert "compression bomb" in _refused(live_service, http, bomb)

    zip_link = tmp_path / "ziplink.zip"
    with zipfile.ZipFile(zip_link, "w") as archive:
        archive.writestr("sm/saved_model.pb", b"pb")
        info = zipfile.ZipInfo("sm/variables")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc")
    assert "is a symbolic link" in _refused(live_service, http, zip_link)


def _step_graph(
    nodes: list[onnx.NodeProto], domains: list[tuple[str, int]], names: tuple[str, str] = ("u", "h")
) -> onnx.ModelProto:
    graph = oh.make_graph(
        nodes,
        "step",
        [oh.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 2]) for name in names],
        [oh.make_tensor_value_info("h_next", TensorProto.FLOAT, ["n", 2])],
        [onnx.numpy_helper.from_array(np.array([[0.5, 0.1], [-0.2, 0.4]], np.float32), "W")],
    )
    return oh.make_model(graph, opset_imports=[oh.make_opsetid(d, v) for d, v in domains])


def test_onnx_refusals(live_service: LiveService, http: httpx.Client, tmp_path: Path) -> None:
    custom = tmp_path / "custom.onnx"
    nodes = [oh.make_node("Add", ["u", "h"], ["s"]), oh.make_node("Evil", ["s"], ["h_next"], domain="com.example")]
    onnx.save_model(_step_graph(nodes, [("", 17), ("com.example", 1)]), str(custom))
    assert "custom-op domain(s) com.example" in _refused(live_service, http, custom)

    # Weights kept outside the upload: the tensor points at ../weights.bin, present beside the archive.
    proto = _step_graph(
        [oh.make_node("MatMul", ["h", "W"], ["m"]), oh.make_node("Add", ["m", "u"], ["h_next"])], [("", 17)]
    )
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.external_data_helper.convert_model_to_external_data(proto, location="weights.bin", size_threshold=0)
    onnx.save_model(proto, str(folder / "model.onnx"))
    (folder / "weights.bin").rename(tmp_path / "weights.bin")
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../weights.bin"
    onnx.save_model(proto, str(folder / "model.onnx"))
    outside = _pack(folder, tmp_path / "external.zip")
    assert "external data outside the upload ('../weights.bin')" in _refused(live_service, http, outside)


def _savedmodel(tmp_path: Path, name: str, body: Any, arg_names: tuple[str, str], signature: str) -> Path:
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.step = tf.function(body, input_signature=[tf.TensorSpec([None, 2], tf.float32, name=n) for n in arg_names])
    tf.saved_model.save(module, str(tmp_path / name), signatures={signature: module.step})
    return _pack(tmp_path / name, tmp_path / f"{name}.tar.gz")


def test_savedmodel_reading_a_file_refused(live_service: LiveService, http: httpx.Client, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")

    def read_file(u, h):
        length = tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)
        return {"h_next": h + u + 0.0 * length}

    detail = _refused(live_service, http, _savedmodel(tmp_path, "reader", read_file, ("u", "h"), "serving_default"))
    assert "ReadFile" in detail


def _ready_after_naming(
    live_service: LiveService, http: httpx.Client, path: Path, names: dict[str, str]
) -> dict[str, Any]:
    """Upload the same bytes again with ``names``: validated again (202), ready, the names on the record."""
    response = _upload(http, path, names)
    assert response.status_code == 202, response.text
    model = live_service.wait_model(response.json()["id"], WAIT_S)
    assert model["status"] == "ready", model["error"]
    assert {k: model[k] for k in names} == names
    assert http.get(f"/v1/models/{model['id']}").json() == model
    return model


def _solve(
    live_service: LiveService, http: httpx.Client, model: dict[str, Any], h: np.ndarray, u: np.ndarray
) -> FixedPoints:
    body = {"model_id": model["id"], "initial_states": h.tolist(), "inputs": u.tolist(), "options": OPTIONS}
    job = live_service.wait_job(http.post("/v1/jobs", json=body).raise_for_status().json()["id"], WAIT_S)
    assert job["status"] == "succeeded", job["error"]
    return FixedPoints.load(http.get(f"/v1/jobs/{job['id']}/result", params={"format": "npz"}).content)


def test_ambiguous_onnx_says_how_to_name_and_is_accepted_when_named(
    live_service: LiveService, http: httpx.Client, tmp_path: Path
) -> None:
    path = tmp_path / "ambiguous.onnx"
    nodes = [
        oh.make_node("MatMul", ["b", "W"], ["m"]),
        oh.make_node("Tanh", ["m"], ["t"]),
        oh.make_node("Add", ["t", "a"], ["h_next"]),
    ]
    onnx.save_model(_step_graph(nodes, [("", 17)], names=("a", "b")), str(path))
    detail = _refused(live_service, http, path)
    assert "cannot tell the input u from the state h" in detail and "input_names=['u', 'h']" in detail
    assert "name them at upload (input_name=, state_name=)" in detail
    model = _ready_after_naming(live_service, http, path, {"input_name": "a", "state_name": "b"})
    assert model["validation"]["max_abs_diff"] < TOL
    # F(h) = tanh(h W) + u with u = 0 has the single root h = 0, where J = diag(1 - tanh^2) W^T = W^T.
    found = _solve(live_service, http, model, np.full((4, 2), 0.3, np.float32), np.zeros((1, 2), np.float32))
    np.testing.assert_allclose(found.xstar, np.zeros((1, 2)), atol=TOL)
    np.testing.assert_allclose(found.J_xstar[0], np.array([[0.5, 0.1], [-0.2, 0.4]]).T, atol=TOL)


def test_savedmodel_signature_and_arguments_named_at_upload(
    live_service: LiveService, http: httpx.Client, tmp_path: Path
) -> None:
    tf = pytest.importorskip("tensorflow")
    path = _savedmodel(tmp_path, "named", lambda a, b: {"y": 0.5 * tf.tanh(b) + a}, ("a", "b"), "step")
    assert "no signature 'serving_default'" in _refused(live_service, http, path)
    detail = _refused(live_service, http, path, signature="step")
    assert "cannot tell the input u from the state h" in detail and "name='u'" in detail
    names = {"signature": "step", "input_name": "a", "state_name": "b", "output_name": "y"}
    model = _ready_after_naming(live_service, http, path, names)
    assert model["format"] == "savedmodel" and model["validation"] is None
    found = _solve(live_service, http, model, np.full((4, 2), 0.3, np.float32), np.zeros((1, 2), np.float32))
    np.testing.assert_allclose(found.xstar, np.zeros((1, 2)), atol=TOL)
    np.testing.assert_allclose(found.J_xstar[0], 0.5 * np.eye(2), atol=TOL)


def test_naming_refused_for_torchscript(live_service: LiveService, http: httpx.Client, tmp_path: Path) -> None:
    path = tmp_path / "cell.pt"
    torch.jit.save(torch.jit.script(nets.Cell("rnn", nets.weights("rnn"))), str(path))
    detail = _refused(live_service, http, path, input_name="u", n_states=nets.N_UNITS, n_inputs=nets.N_INPUTS)
    assert "input_name cannot be given for torchscript models" in detail


def test_unknown_format_is_refused_as_an_invalid_request(http: httpx.Client, tmp_path: Path) -> None:
    """Like every malformed form field (docs/api.md: FastAPI's validation answers invalid_request, 400)."""
    path = tmp_path / "model.bin"
    path.write_bytes(b"anything")
    response = _upload(http, path, {"format": "keras"})
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "invalid_request"
    assert (
        "format" in problem["detail"] and "'torchscript', 'torch_export', 'onnx' or 'savedmodel'" in problem["detail"]
    )
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    assert schema["ModelFormat"]["enum"] == ["torchscript", "torch_export", "onnx", "savedmodel"]


# --- the same through gRPC and the client -----------------------------------------------------


@pytest.fixture(scope="module")
def grpc_url(live_service: LiveService) -> Iterator[str]:
    """``grpc://host:port`` of an ``fpf-server grpc`` process beside the live gateway (same Redis and data)."""
    with grpc_server(live_service) as target:
        yield f"grpc://{target}"


def test_names_given_through_grpc_and_the_client(grpc_url: str, tmp_path: Path) -> None:
    path = tmp_path / "ambiguous-grpc.onnx"
    nodes = [
        oh.make_node("MatMul", ["b", "W"], ["m"]),
        oh.make_node("Sin", ["m"], ["t"]),
        oh.make_node("Add", ["t", "a"], ["h_next"]),
    ]
    onnx.save_model(_step_graph(nodes, [("", 17)], names=("a", "b")), str(path))
    with Client(grpc_url) as client:
        with pytest.raises(InvalidModel, match="or name them at upload"):
            client.upload_model(path, timeout=WAIT_S)
        model = client.upload_model(path, input_name="a", state_name="b", output_name="h_next", timeout=WAIT_S)
        assert (model.format, model.input_name, model.state_name, model.output_name) == ("onnx", "a", "b", "h_next")
        assert model.signature is None and model.validation["max_abs_diff"] < TOL
        assert client.get_model(model.id) == model
        with pytest.raises(InvalidRequest, match="format"):
            client.upload_model(path, format="keras")
        with pytest.raises(InvalidRequest, match="input_name"):
            client.upload_model(path, input_name="")


def test_fpf_upload_names_tensors_and_packs_a_savedmodel_directory(live_service: LiveService, tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.step = tf.function(
        lambda a, b: {"y": 0.25 * tf.tanh(b) + a},
        input_signature=[tf.TensorSpec([None, 3], tf.float32, name=n) for n in "ab"],
    )
    tf.saved_model.save(module, str(tmp_path / "cli_sm"), signatures={"predict": module.step})
    command = [
        sys.executable,
        "-m",
        "fpf_client.cli",
        "--url",
        live_service.url,
        "upload",
        str(tmp_path / "cli_sm"),
        "--signature",
        "predict",
        "--input-name",
        "a",
        "--state-name",
        "b",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert done.returncode == 0, done.stderr
    model_id, status = done.stdout.split("\t")[:2]
    assert status == "ready" and done.stdout.rstrip().endswith("cli_sm.tar.gz")
    with Client(live_service.url) as client:
        model = client.get_model(model_id)
    assert (model.format, model.signature, model.n_states, model.n_inputs) == ("savedmodel", "predict", 3, 3)
