"""load_savedmodel: the test networks saved by TensorFlow, and every refusal with a crafted SavedModel."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Callable

import pytest
import torch

import export_nets as nets
from fpf_client.errors import InvalidModel
from workers.engine.models.savedmodel import load_savedmodel, looks_like_savedmodel

tf = pytest.importorskip("tensorflow")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("savedmodel")
    return {kind: nets.export_savedmodel(kind, nets.weights(kind), root / kind) for kind in nets.KINDS}


def _states(kind: str, n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, nets.n_states(kind), generator=g), torch.randn(n, nets.N_INPUTS, generator=g)


def _archive(directory: Path, path: Path) -> Path:
    shutil.make_archive(str(path).removesuffix(".tar.gz").removesuffix(".zip"),
                        "gztar" if path.name.endswith(".tar.gz") else "zip", directory.parent, directory.name)
    return path


@pytest.mark.parametrize("kind", nets.KINDS)
def test_same_map_and_jacobians_as_torch(saved: dict[str, Path], kind: str) -> None:
    model = load_savedmodel(saved[kind], dynamics=nets.dynamics(kind))
    assert (model.n_states, model.n_inputs, model.dtype) == (nets.n_states(kind), nets.N_INPUTS, torch.float32)
    reference = nets.Cell(kind, nets.weights(kind))
    h, u = _states(kind)
    torch.testing.assert_close(model.step(h, u), reference(u, h), atol=1e-5, rtol=1e-5)
    J = torch.func.vmap(torch.func.jacrev(lambda x, v: reference(v[None], x[None])[0]))(h, u)
    dFdu = torch.func.vmap(torch.func.jacrev(lambda v, x: reference(v[None], x[None])[0]))(u, h)
    torch.testing.assert_close(model.jacobian_states(h, u), J, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.jacobian_inputs(h, u), dFdu, atol=1e-5, rtol=1e-5)
    v = torch.randn_like(h)
    out, Jv = model.jvp(h, u, v)
    _, wJ = model.vjp(h, u, v)
    torch.testing.assert_close(out, reference(u, h), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(Jv, torch.einsum("nij,nj->ni", J, v), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(wJ, torch.einsum("nij,ni->nj", J, v), atol=1e-5, rtol=1e-5)
    # One input row broadcasts to the batch, as for every StepModel.
    torch.testing.assert_close(model.step(h, u[:1]), reference(u[:1].expand_as(u), h), atol=1e-5, rtol=1e-5)


def test_jacobians_match_float64_finite_differences(tmp_path: Path) -> None:
    model = load_savedmodel(nets.export_savedmodel("gru", nets.weights("gru"), tmp_path / "gru64", "float64"))
    assert model.dtype == torch.float64
    h, u = (t.double() for t in _states("gru"))
    eps = 1e-6
    eye = torch.eye(model.n_states, dtype=torch.float64)
    fd = torch.stack([(model.step(h + eps * e, u) - model.step(h - eps * e, u)) / (2 * eps) for e in eye], dim=2)
    torch.testing.assert_close(model.jacobian_states(h, u), fd, atol=1e-8, rtol=1e-7)


def test_functions_trace_once(saved: dict[str, Path]) -> None:
    model = load_savedmodel(saved["lstm"])
    for n in (3, 11, 64):
        h, u = _states("lstm", n)
        model.jacobian_states(h, u)
        model.step(h, u)
    assert model._functions["jacobian_states"].experimental_get_tracing_count() == 1
    assert model._functions["step"].experimental_get_tracing_count() == 1


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_loads_from_an_archive(saved: dict[str, Path], tmp_path: Path, suffix: str) -> None:
    archive = _archive(saved["rnn"], tmp_path / f"rnn{suffix}")
    assert looks_like_savedmodel(archive) and looks_like_savedmodel(saved["rnn"])
    model = load_savedmodel(archive)
    h, u = _states("rnn")
    torch.testing.assert_close(model.step(h, u), nets.Cell("rnn", nets.weights("rnn"))(u, h), atol=1e-5, rtol=1e-5)


def test_unsafe_archive_refused(saved: dict[str, Path], tmp_path: Path) -> None:
    archive = _archive(saved["rnn"], tmp_path / "rnn.tar.gz")
    with tarfile.open(archive, "r:gz") as source, tarfile.open(tmp_path / "evil.tar.gz", "w:gz") as target:
        for member in source.getmembers():
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        link = tarfile.TarInfo("rnn/variables/secret")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        target.addfile(link)
    with pytest.raises(InvalidModel, match="is a link"):
        load_savedmodel(tmp_path / "evil.tar.gz")


def test_float64_analysis_of_a_float32_model_refused_plainly(saved: dict[str, Path]) -> None:
    model = load_savedmodel(saved["rnn"])
    assert model.to(dtype=torch.float32) is model
    with pytest.raises(InvalidModel, match="computes in float32"):
        model.to(dtype=torch.float64)



def test_a_float32_savedmodel_search_below_float32_resolution_says_why(saved: dict[str, Path]) -> None:
    """Roots float32 cannot certify are refined in float64, which a float32 SavedModel cannot do:
    the search still returns, and says so."""
    from workers.engine import find_fixed_points

    model = load_savedmodel(saved["rnn"])
    states, _ = _states("rnn", 16)
    fps = find_fixed_points(model, states.numpy(), method="newton", tol_q=1e-20, device="cpu")
    assert fps.n == 0 and fps.info["n_stalled_at_rounding_floor"] > 0 and fps.info["n_refined_in_float64"] == 0
    assert "could not be refined in float64: this SavedModel computes in float32" in fps.info["warnings"][0]


# --- crafted SavedModels ---------------------------------------------------------


def _save(tmp_path: Path, body: Callable, *, batch: int | None = None, name: str = "sm") -> Path:
    """Save ``body(u, h)`` (argument names as written in body) as serving_default."""
    names = body.__code__.co_varnames[: body.__code__.co_argcount]
    specs = [tf.TensorSpec([batch, 2], tf.float32, name=arg) for arg in names]
    module = tf.Module()
    module.counter = _COUNTER  # tracked, for the body that writes a variable
    module.step = tf.function(body, input_signature=specs)
    tf.saved_model.save(module, str(tmp_path / name), signatures={"serving_default": module.step})
    return tmp_path / name


def _read_file(u, h):  # noqa: ANN001, ANN202
    length = tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)
    return {"h_next": h + u + 0.0 * length}


def _write_file(u, h):  # noqa: ANN001, ANN202
    with tf.control_dependencies([tf.io.write_file("/tmp/fpf-evil", "x")]):
        return {"h_next": tf.identity(h + u)}


def _matching_files(u, h):  # noqa: ANN001, ANN202
    count = tf.cast(tf.size(tf.io.matching_files("/etc/*")), tf.float32)
    return {"h_next": h + u + 0.0 * count}


def _py_func(u, h):  # noqa: ANN001, ANN202
    return {"h_next": tf.numpy_function(lambda x: x, [h + u], tf.float32)}


def _print_to_file(u, h):  # noqa: ANN001, ANN202
    with tf.control_dependencies([tf.print(h, output_stream="file:///tmp/fpf-evil")]):
        return {"h_next": tf.identity(h + u)}


def _file_op_in_a_branch(u, h):  # noqa: ANN001, ANN202
    read = tf.cond(tf.reduce_sum(h) > 1e9, lambda: tf.io.read_file("/etc/hostname"), lambda: tf.constant(""))
    return {"h_next": h + u + 0.0 * tf.cast(tf.strings.length(read), tf.float32)}


@tf.function
def _nested(x):  # noqa: ANN001, ANN202
    return x + 0.0 * tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)


def _file_op_in_a_nested_function(u, h):  # noqa: ANN001, ANN202
    return {"h_next": _nested(h) + u}


def _variable_write(u, h):  # noqa: ANN001, ANN202
    with tf.control_dependencies([_COUNTER.assign_add(1.0)]):
        return {"h_next": tf.identity(h + u)}


_COUNTER = tf.Variable(0.0)


@pytest.mark.parametrize(
    "body, op",
    [
        (_read_file, "ReadFile"),
        (_write_file, "WriteFile"),
        (_matching_files, "MatchingFiles"),
        (_py_func, "PyFunc"),
        (_print_to_file, "PrintV2"),
        (_file_op_in_a_branch, "ReadFile"),
        (_file_op_in_a_nested_function, "ReadFile"),
        (_variable_write, "AssignAddVariableOp"),
    ],
)
def test_side_effect_ops_refused_before_loading(tmp_path: Path, body: Callable, op: str) -> None:
    path = _save(tmp_path, body)
    with pytest.raises(InvalidModel, match=op):
        load_savedmodel(path)
    assert not Path("/tmp/fpf-evil").exists()


def _plain(u, h):  # noqa: ANN001, ANN202
    return {"h_next": tf.tanh(h) + u}


def _ambiguous(a, b):  # noqa: ANN001, ANN202
    return {"h_next": tf.tanh(b) + a}


def _two_outputs(u, h):  # noqa: ANN001, ANN202
    return {"y": tf.tanh(h), "z": tf.tanh(h) + u}


def test_crafted_plain_model_loads(tmp_path: Path) -> None:
    model = load_savedmodel(_save(tmp_path, _plain))
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), torch.tanh(h) + u)
    torch.testing.assert_close(model.jacobian_inputs(h, u), torch.eye(2).expand(4, 2, 2))


def test_ambiguous_arguments_say_how_to_name_them(tmp_path: Path) -> None:
    path = _save(tmp_path, _ambiguous)
    with pytest.raises(InvalidModel, match="TensorSpec.*name='u'"):
        load_savedmodel(path)
    model = load_savedmodel(path, input_name="a", state_name="b")
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), torch.tanh(h) + u)


def test_ambiguous_outputs_refused_unless_named(tmp_path: Path) -> None:
    path = _save(tmp_path, _two_outputs)
    with pytest.raises(InvalidModel, match="name the next state h_next"):
        load_savedmodel(path)
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(load_savedmodel(path, output_name="z").step(h, u), torch.tanh(h) + u)


def test_missing_signature_and_fixed_batch_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="no signature 'predict'.*'serving_default'"):
        load_savedmodel(_save(tmp_path, _plain), signature="predict")
    with pytest.raises(InvalidModel, match="fixed batch size 4"):
        load_savedmodel(_save(tmp_path, _plain, batch=4, name="fixed"))


def test_not_a_savedmodel_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(io.BytesIO(b"not an archive").getvalue())
    with pytest.raises(InvalidModel, match="neither a SavedModel directory"):
        load_savedmodel(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidModel, match="no saved_model.pb"):
        load_savedmodel(tmp_path / "empty")
