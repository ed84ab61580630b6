"""load_model forwards upload naming (signature, input/state/output names) to the loaders that take it,
refuses it for formats that cannot use it, and describes ONNX models with their onnxruntime check."""

from __future__ import annotations

from pathlib import Path

import export_nets as nets
import pytest
import torch

from fpf_client.errors import InvalidModel
from workers.engine import load_model

torch.set_num_threads(1)


def _onnx_named(tmp_path: Path, input_names: list[str]) -> Path:
    path = tmp_path / "named.onnx"
    axes = {name: {0: "n"} for name in [*input_names, "out"]}
    torch.onnx.export(
        nets.Cell("rnn", nets.weights("rnn")),
        (torch.zeros(2, nets.N_INPUTS), torch.zeros(2, nets.N_UNITS)),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=input_names,
        output_names=["out"],
        dynamic_axes=axes,
    )
    return path


def _states(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, nets.N_UNITS, generator=g), torch.randn(n, nets.N_INPUTS, generator=g)


def test_onnx_names_forwarded(tmp_path: Path) -> None:
    path = _onnx_named(tmp_path, ["a", "b"])
    with pytest.raises(InvalidModel, match=r"input_names=\['u', 'h'\].*or name them at upload"):
        load_model(path)
    model = load_model(path, input_name="a", state_name="b", output_name="out")
    h, u = _states()
    torch.testing.assert_close(model.step(h, u), nets.Cell("rnn", nets.weights("rnn"))(u, h))
    with pytest.raises(InvalidModel, match="no input 'h'"):
        load_model(path, state_name="h")  # the names reach the loader, which checks them


def test_onnx_description_reports_the_onnxruntime_check(tmp_path: Path) -> None:
    described = load_model(_onnx_named(tmp_path, ["u", "h"]), format="onnx").describe()
    assert described["format"] == "onnx" and described["n_states"] == nets.N_UNITS
    validation = described["validation"]
    assert 0 <= validation["max_abs_diff"] <= validation["tolerance"]
    assert validation["max_abs_diff"] < 1e-5 and validation["reference"].startswith("onnxruntime")


def test_naming_refused_where_the_format_cannot_use_it(tmp_path: Path) -> None:
    script = tmp_path / "cell.pt"
    torch.jit.save(torch.jit.script(nets.Cell("rnn", nets.weights("rnn"))), str(script))
    assert "validation" not in load_model(script).describe()
    with pytest.raises(InvalidModel, match="input_name, state_name cannot be given for torchscript.*forward\\(u, h\\)"):
        load_model(script, input_name="u", state_name="h")
    with pytest.raises(InvalidModel, match="signature cannot be given for onnx models"):
        load_model(_onnx_named(tmp_path, ["u", "h"]), signature="serving_default")


def test_savedmodel_signature_and_names_forwarded(tmp_path: Path) -> None:
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.step = tf.function(
        lambda a, b: {"y": tf.tanh(b) + a, "z": b},
        input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None, 2], tf.float32, name="b"),
        ],
    )
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"step": module.step})
    with pytest.raises(InvalidModel, match="no signature 'serving_default'"):
        load_model(tmp_path / "sm")
    model = load_model(tmp_path / "sm", signature="step", input_name="a", state_name="b", output_name="y")
    h, u = torch.randn(4, 2), torch.randn(4, 2)
    torch.testing.assert_close(model.step(h, u), torch.tanh(h) + u)
    assert model.describe()["format"] == "savedmodel"
