"""load_savedmodel: the test networks saved by TensorFlow, and every refusal with a crafted SavedModel."""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import export_nets as nets
import pytest
import torch

from fpf_client.errors import InvalidModel
from workers.engine.models.savedmodel import load_savedmodel, looks_like_savedmodel

tf = pytest.importorskip("tensorflow")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(shared_exports: nets.SharedExports) -> dict[str, Path]:
    return {kind: shared_exports.savedmodel(kind) for kind in nets.KINDS}


def _states(kind: str, n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, nets.n_states(kind), generator=g), torch.randn(n, nets.N_INPUTS, generator=g)


def _archive(directory: Path, path: Path) -> Path:
    shutil.make_archive(
        str(path).removesuffix(".tar.gz").removesuffix(".zip"),
        "gztar" if path.name.endswith(".tar.gz") else "zip",
        directory.parent,
        directory.name,
    )
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
        link = tarfile.TarInfo(f"{saved['rnn'].name}/variables/secret")
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
    fps = find_fixed_points(model, states.numpy(), method="auto", tol_q=1e-20, device="cpu")
    assert fps.n == 0 and fps.info["n_stalled_at_rounding_floor"] > 0 and fps.info["n_refined_in_float64"] == 0
    assert "could not be refined in float64: this SavedModel computes in float32" in fps.info["warnings"][0]


# --- crafted SavedModels ---------------------------------------------------------


def _save(tmp_path: Path, body: Callable, *, batch: int | None = None, name: str = "sm") -> Path:
    """Save ``body(u, h)`` (argument names as written in body) as serving_default."""
    names = body.__code__.co_varnames[: body.__code__.co_argcount]
    specs = [tf.TensorSpec([batch, 2], tf.float32, name=arg) for arg in names]
    module = tf.Module()
    module.counter = _COUNTER  # tracked: the model's own variable, for the bodies that write one
    module.step = tf.function(body, input_signature=specs)
    tf.saved_model.save(module, str(tmp_path / name), signatures={"serving_default": module.step})
    return tmp_path / name


def _read_file(u, h):
    length = tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)
    return {"h_next": h + u + 0.0 * length}


def _write_file(u, h):
    with tf.control_dependencies([tf.io.write_file("/tmp/fpf-evil", "x")]):
        return {"h_next": tf.identity(h + u)}


def _matching_files(u, h):
    count = tf.cast(tf.size(tf.io.matching_files("/etc/*")), tf.float32)
    return {"h_next": h + u + 0.0 * count}


def _py_func(u, h):
    return {"h_next": tf.numpy_function(lambda x: x, [h + u], tf.float32)}


def _print_to_file(u, h):
    with tf.control_dependencies([tf.print(h, output_stream="file:///tmp/fpf-evil")]):
        return {"h_next": tf.identity(h + u)}


def _file_op_in_a_branch(u, h):
    read = tf.cond(tf.reduce_sum(h) > 1e9, lambda: tf.io.read_file("/etc/hostname"), lambda: tf.constant(""))
    return {"h_next": h + u + 0.0 * tf.cast(tf.strings.length(read), tf.float32)}


@tf.function
def _nested(x):
    return x + 0.0 * tf.cast(tf.strings.length(tf.io.read_file("/etc/hostname")), tf.float32)


def _file_op_in_a_nested_function(u, h):
    return {"h_next": _nested(h) + u}


@tf.function
def _read_in_a_loop_body(x):
    def body(i, y):
        read = tf.cond(tf.reduce_sum(y) > 1e9, lambda: tf.io.read_file("/etc/hostname"), lambda: tf.constant(""))
        return i + 1, y + 0.0 * tf.cast(tf.strings.length(read), tf.float32)

    return tf.while_loop(lambda i, y: i < 1, body, (tf.constant(0), x))[1]


@tf.function
def _calls_a_loop(x):
    return _read_in_a_loop_body(x)


def _file_op_hidden_in_nested_calls(u, h):
    return {"h_next": _calls_a_loop(h) + u}


def _impure_variable_write(u, h):
    with tf.control_dependencies([_COUNTER.assign_add(1.0)]):
        return {"h_next": h + u + 0.0 * _COUNTER.read_value() + _COUNTER.read_value()}


def _pure_variable_write(u, h):
    # What a Keras seed generator does: advance a state variable the output never reads.
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
        (
            _file_op_in_a_nested_function,
            "ReadFile in __inference__nested_[0-9]+, reached by signature "
            "'serving_default' -> __inference_signature_wrapper_.* -> node "
            "'PartitionedCall' -> __inference__nested_[0-9]+;",
        ),
        (
            _file_op_hidden_in_nested_calls,
            "ReadFile in while_cond_true_[0-9]+, reached by signature "
            "'serving_default' -> .*_calls_a_loop_[0-9]+ -> node 'PartitionedCall' -> "
            "__inference__read_in_a_loop_body_[0-9]+ -> node 'while' -> while_body_[0-9]+ "
            "-> node 'while/cond' -> while_cond_true_[0-9]+",
        ),
    ],
)
def test_side_effect_ops_refused_before_loading(tmp_path: Path, body: Callable, op: str) -> None:
    path = _save(tmp_path, body)
    with pytest.raises(InvalidModel, match=op):
        load_savedmodel(path)
    assert not Path("/tmp/fpf-evil").exists()


def test_a_write_to_its_own_variable_is_allowed_when_the_step_stays_pure(tmp_path: Path) -> None:
    model = load_savedmodel(_save(tmp_path, _pure_variable_write))
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), h + u)
    torch.testing.assert_close(model.jacobian_states(h, u), torch.eye(2).expand(4, 2, 2))
    with pytest.raises(InvalidModel, match="not a pure function of .*AssignAddVariableOp in __inference"):
        load_savedmodel(_save(tmp_path, _impure_variable_write, name="impure"))


def test_initialiser_and_checkpoint_nodes_nothing_calls_are_no_reason_to_refuse(tmp_path: Path) -> None:
    """A Keras cell in a tf.Module: the SavedModel's graph holds AssignVariableOp initialisers and
    RestoreV2 in the saver's restore function, which the served signature never runs."""
    keras = pytest.importorskip("keras")
    cell = keras.layers.GRUCell(3)
    module = tf.Module()
    module.cell = cell

    @tf.function(input_signature=[tf.TensorSpec([None, 2], name="u"), tf.TensorSpec([None, 3], name="h")])
    def step(u, h):
        return {"h_next": cell(u, [h])[1][0]}

    module.step = step
    tf.saved_model.save(module, str(tmp_path / "keras"), signatures={"serving_default": step})
    graph_ops = {node.op for node in _meta_graph(tmp_path / "keras").graph_def.node}
    assert "AssignVariableOp" in graph_ops
    model = load_savedmodel(tmp_path / "keras")
    h, u = torch.randn(4, 3), torch.randn(4, 2)
    expected = cell(u.numpy(), [h.numpy()])[1][0].numpy()
    torch.testing.assert_close(model.step(h, u), torch.from_numpy(expected))


def _meta_graph(directory: Path):
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((directory / "saved_model.pb").read_bytes())
    return saved_model.meta_graphs[0]


def _plain(u, h):
    return {"h_next": tf.tanh(h) + u}


def _ambiguous(a, b):
    return {"h_next": tf.tanh(b) + a}


def _two_outputs(u, h):
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


# --- the common export mistakes, each refused with its fix -------------------------------------


def _save_specs(tmp_path: Path, name: str, body: Callable, specs: list) -> Path:
    module = tf.Module()
    module.step = tf.function(body, input_signature=specs)
    tf.saved_model.save(module, str(tmp_path / name), signatures={"serving_default": module.step})
    return tmp_path / name


def test_half_precision_signature_refused_with_the_fix(tmp_path: Path) -> None:
    specs = [tf.TensorSpec([None, 2], tf.float16, name="u"), tf.TensorSpec([None, 2], tf.float16, name="h")]
    path = _save_specs(tmp_path, "half", lambda u, h: {"h_next": tf.tanh(h) + u}, specs)
    with pytest.raises(InvalidModel, match="is float16: fixed points need float32 or float64; export the step with"):
        load_savedmodel(path)


def test_a_sequence_input_longer_than_one_step_refused_with_the_fix(tmp_path: Path) -> None:
    specs = [tf.TensorSpec([None, 5, 2], tf.float32, name="u"), tf.TensorSpec([None, 2], tf.float32, name="h")]
    path = _save_specs(tmp_path, "seq", lambda u, h: {"h_next": tf.tanh(h) + tf.reduce_sum(u, 1)}, specs)
    with pytest.raises(
        InvalidModel,
        match=r"sequence of 5 time steps .* export the layer with an input of shape "
        r"\(None, 1, m\)",
    ):
        load_savedmodel(path)


def test_a_length_one_sequence_input_is_fed_one_step(tmp_path: Path) -> None:
    specs = [tf.TensorSpec([None, None, 2], tf.float32, name="x"), tf.TensorSpec([None, 2], tf.float32, name="s")]
    model = load_savedmodel(_save_specs(tmp_path, "seq1", lambda x, s: {"y": tf.tanh(s) + x[:, -1]}, specs))
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), torch.tanh(h) + u)
    torch.testing.assert_close(model.jacobian_inputs(h, u), torch.eye(2).expand(4, 2, 2))


def test_a_cell_returning_output_and_state_list_is_told_what_to_return(tmp_path: Path) -> None:
    specs = [tf.TensorSpec([None, 2], tf.float32, name="u"), tf.TensorSpec([None, 2], tf.float32, name="h")]
    # TF cannot save the nested (output, [state]) as a signature; flattened, it is two positional outputs.
    path = _save_specs(tmp_path, "pair", lambda u, h: (tf.tanh(h + u), tf.tanh(h + u)), specs)
    with pytest.raises(
        InvalidModel,
        match=r"a Keras cell's \(output, \[state\]\) returned as it is: return the next "
        r"state alone",
    ):
        load_savedmodel(path)


def test_a_two_part_state_is_packed_and_its_outputs_named(tmp_path: Path) -> None:
    specs = [
        tf.TensorSpec([None, 1], tf.float32, name="u"),
        tf.TensorSpec([None, 2], tf.float32, name="h"),
        tf.TensorSpec([None, 3], tf.float32, name="c"),
    ]
    body = lambda u, h, c: {"a": tf.tanh(h) + u, "b": 0.5 * c}  # noqa: E731
    path = _save_specs(tmp_path, "pair_state", body, specs)
    with pytest.raises(
        InvalidModel,
        match=r"do not include h_next, c_next: name them so, or give "
        r"output_name='h_next,c_next'",
    ):
        load_savedmodel(path)
    model = load_savedmodel(path, output_name="a,b")
    assert (model.n_states, model.n_inputs) == (5, 1)
    h, u = torch.randn(4, 5), torch.randn(4, 1)
    torch.testing.assert_close(model.step(h, u), torch.cat([torch.tanh(h[:, :2]) + u, 0.5 * h[:, 2:]], 1))
    with pytest.raises(InvalidModel, match=r"n_states=4 was given, but the model declares 5: leave the hint out"):
        load_savedmodel(path, output_name="a,b", n_states=4)


@pytest.mark.parametrize("noise_scale, pure", [(0.0, True), (0.1, False)])
def test_a_keras_seed_generator_update_in_the_step(tmp_path: Path, noise_scale: float, pure: bool) -> None:
    """The step advances a Keras SeedGenerator (AssignVariableOp on its state): allowed while the noise
    does not reach the output, refused as impure when it does."""
    keras = pytest.importorskip("keras")
    cell, seeds = keras.layers.GRUCell(3), keras.random.SeedGenerator(1)
    module = tf.Module()
    module.cell, module.seeds, module.seed_state = cell, seeds, seeds.state

    @tf.function(input_signature=[tf.TensorSpec([None, 2], name="u"), tf.TensorSpec([None, 3], name="h")])
    def step(u, h):
        noisy = u + noise_scale * keras.random.normal(tf.shape(u), seed=seeds)
        return {"h_next": cell(noisy, [h])[1][0]}

    module.step = step
    tf.saved_model.save(module, str(tmp_path / "seeded"), signatures={"serving_default": step})
    step_ops = {node.op for f in _meta_graph(tmp_path / "seeded").graph_def.library.function for node in f.node_def}
    assert "AssignVariableOp" in step_ops
    if not pure:
        with pytest.raises(InvalidModel, match="not a pure function of .*seed_generator_state"):
            load_savedmodel(tmp_path / "seeded")
        return
    model = load_savedmodel(tmp_path / "seeded")
    h, u = torch.randn(4, 3), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), torch.from_numpy(cell(u.numpy(), [h.numpy()])[1][0].numpy()))
