"""The ONNX and SavedModel export recipes of docs/model-contract.md run as written and give files fpf
accepts, and the upload examples there use only the form fields the gateway takes."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from service.gateway.schemas import UploadHints
from workers.engine.models import load_model

DOC = Path(__file__).resolve().parents[3] / "docs" / "model-contract.md"


def _section(section: str) -> str:
    return DOC.read_text().split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]


def _run_recipe(section: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    blocks = re.findall(r"```python\n(.*?)```", _section(section), flags=re.DOTALL)
    assert len(blocks) == 1, f"the {section} recipe should be one block: the code this test runs"
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "recipe.py"
    script.write_text(blocks[0])
    return runpy.run_path(str(script), run_name="recipe")


def test_onnx_recipe_runs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    namespace = _run_recipe("ONNX files", tmp_path, monkeypatch)
    model = load_model(tmp_path / "gru.onnx")
    assert (model.format, model.n_states, model.n_inputs) == ("onnx", 16, 3)
    u, h = torch.randn(5, 3), torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.step(h, u), namespace["step"](u, h), atol=1e-6, rtol=1e-5)


def test_savedmodel_recipe_runs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorflow")
    namespace = _run_recipe("TensorFlow SavedModel", tmp_path, monkeypatch)
    model = load_model(tmp_path / "step_model.tar.gz")
    assert (model.format, model.n_states, model.n_inputs) == ("savedmodel", 16, 3)
    u, h = torch.randn(5, 3), torch.randn(5, 16)
    expected = namespace["module"].step(u.numpy(), h.numpy())["h_next"].numpy()
    torch.testing.assert_close(model.step(h, u), torch.from_numpy(expected))


def test_upload_examples_use_the_gateway_fields() -> None:
    text = _section("Uploading")
    curl_fields = set(re.findall(r"-F (\w+)=", text)) - {"file"}
    cli_fields = {name.replace("-", "_") for name in re.findall(r"--([\w-]+)", text)}
    client_fields = set(re.findall(r"(\w+)=\"", text))
    assert {"signature", "input_name", "state_name", "output_name"} <= curl_fields & cli_fields & client_fields
    assert curl_fields | cli_fields | client_fields <= set(UploadHints.model_fields)


def test_torch_export_recipe_runs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    namespace = _run_recipe("torch.export programs", tmp_path, monkeypatch)
    model = load_model(tmp_path / "gru_step.pt2")
    assert (model.format, model.n_states, model.n_inputs) == ("torch_export", 32, 3)
    u, h = torch.randn(5, 3), torch.randn(5, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.step(h, u), namespace["Step"](namespace["layer"]).eval()(u, h))


def test_keras_recipe_runs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorflow")
    namespace = _run_recipe("Keras 3 exports", tmp_path, monkeypatch)
    model = load_model(tmp_path / "lstm_step")
    assert (model.format, model.n_states, model.n_inputs) == ("savedmodel", 32, 3)
    u, h = torch.randn(5, 3), torch.randn(5, 32)
    keras = namespace["keras"]
    expected = keras.Model(
        [namespace["u"], namespace["h"], namespace["c"]], [namespace["h_next"], namespace["c_next"]]
    )([u.numpy()[:, None, :], h[:, :16].numpy(), h[:, 16:].numpy()])
    torch.testing.assert_close(model.step(h, u), torch.from_numpy(np.concatenate([t.numpy() for t in expected], 1)))
