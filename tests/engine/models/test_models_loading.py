"""Model files and objects: format detection, shape discovery, and every way to fail the contract."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from model_steps import HIDDEN, N_IN, GRUCellStep, InPlaceLSTMStep, RateStep

from fpf_client.errors import InvalidModel
from workers.engine.models import as_step_model, detect_format, load_model


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _script_to(path: Path, module: torch.nn.Module) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


# --- detection and shapes --------------------------------------------------------------
def test_detects_torchscript_scripted_and_traced(tmp_path: Path) -> None:
    scripted = _script_to(tmp_path / "a.pt", GRUCellStep())
    traced = tmp_path / "b.bin"
    torch.jit.save(torch.jit.trace(GRUCellStep(), (torch.randn(2, N_IN), torch.randn(2, HIDDEN))), str(traced))
    assert detect_format(scripted) == detect_format(traced) == "torchscript"


@pytest.mark.parametrize(
    "layer, shape",
    [
        (torch.nn.RNN(N_IN, HIDDEN, 3), (3 * HIDDEN, N_IN)),
        (torch.nn.GRU(N_IN, HIDDEN, batch_first=True), (HIDDEN, N_IN)),
        (torch.nn.LSTM(N_IN, HIDDEN, 2), (4 * HIDDEN, N_IN)),
        (torch.nn.LSTM(N_IN, HIDDEN, 2, proj_size=2), (2 * 2 + 2 * HIDDEN, N_IN)),
        (torch.nn.GRUCell(N_IN, HIDDEN), (HIDDEN, N_IN)),
        (torch.nn.LSTMCell(N_IN, HIDDEN), (2 * HIDDEN, N_IN)),
    ],
)
def test_scripted_recurrent_layers_declare_their_shapes(tmp_path: Path, layer: torch.nn.Module, shape: tuple) -> None:
    model = load_model(_script_to(tmp_path / "layer.pt", layer))
    assert (model.n_states, model.n_inputs) == shape
    assert model.describe() == {"format": "torchscript", "n_states": shape[0], "n_inputs": N_IN, "dynamics": "discrete"}


def test_shapes_from_parameters_of_a_custom_module(tmp_path: Path) -> None:
    path = _script_to(tmp_path / "rate.pt", RateStep(d=7, m=3))
    model = load_model(path, dynamics="continuous")
    assert (model.n_states, model.n_inputs, model.dynamics) == (7, 3, "continuous")


def test_shapes_of_a_traced_module_around_a_cell(tmp_path: Path) -> None:
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(GRUCellStep(), (torch.randn(2, N_IN), torch.randn(2, HIDDEN))), str(path))
    model = load_model(path)
    assert (model.n_states, model.n_inputs) == (HIDDEN, N_IN)


def test_hints_are_needed_when_parameters_do_not_tell(tmp_path: Path) -> None:
    # Four separate gate weights (HIDDEN x HIDDEN) suggest d = HIDDEN, but the state is [h, c].
    module = InPlaceLSTMStep()
    path = tmp_path / "lstm.pt"
    torch.jit.save(torch.jit.trace(module, (torch.randn(2, N_IN), torch.randn(2, 2 * HIDDEN))), str(path))
    with pytest.raises(InvalidModel, match="pass n_states and n_inputs"):
        load_model(path)
    model = load_model(path, n_states=2 * HIDDEN, n_inputs=N_IN)
    assert (model.n_states, model.n_inputs) == (2 * HIDDEN, N_IN)


def test_partial_hint_selects_among_candidates(tmp_path: Path) -> None:
    path = _script_to(tmp_path / "rate.pt", RateStep(d=5, m=2))
    assert load_model(path, n_states=5).n_inputs == 2
    with pytest.raises(InvalidModel, match="pass n_states and n_inputs"):
        load_model(path, n_states=6)


class _Elementwise(torch.nn.Module):
    """Accepts any shape, and has two square weights: two candidates pass the dry run."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.eye(3))
        self.b = torch.nn.Parameter(torch.eye(4))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h)


def test_ambiguous_shapes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="several shapes fit"):
        load_model(_script_to(tmp_path / "any.pt", _Elementwise()))
    assert load_model(tmp_path / "any.pt", n_states=3, n_inputs=1).n_states == 3


def test_hints_contradicting_a_recurrent_layer_are_refused() -> None:
    with pytest.raises(InvalidModel, match="n_states=5 does not match"):
        as_step_model(torch.nn.GRU(N_IN, HIDDEN), n_states=5)


def test_a_lambda_needs_hints() -> None:
    with pytest.raises(InvalidModel, match="pass n_states and n_inputs"):
        as_step_model(lambda u, h: torch.tanh(h))
    assert as_step_model(lambda u, h: torch.tanh(h), n_states=2, n_inputs=0).dtype == torch.float32


def test_step_model_is_returned_as_is() -> None:
    model = as_step_model(torch.nn.GRU(N_IN, HIDDEN))
    assert as_step_model(model) is model
    with pytest.raises(InvalidModel):
        as_step_model(model, n_inputs=N_IN + 1)


# --- files and objects that do not fit ---------------------------------------------------
class _OneArgument(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _WrongShape(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h[:, :1]


class _NaN(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h * float("nan")


class _Raises(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if h.shape[1] > 0:
            raise RuntimeError("boom inside forward")
        return h


class _WrongDtype(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h.double()


class _WritesInput(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h.mul_(0.5)


class _ReturnsList(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> list[int]:
        return [1, 2]


@pytest.mark.parametrize(
    "module, reason",
    [
        (_OneArgument(), r"forward takes \(x\); the step contract is forward\(u, h\)"),
        (_WrongShape(), r"returned shape \(3, 1\) .*; expected \(3, 3\)"),
        (_NaN(), "non-finite values"),
        (_Raises(), "boom inside forward"),
        (_WrongDtype(), "returned dtype torch.float64"),
        (_WritesInput(), "writes into its inputs"),
        (_ReturnsList(), "returned list"),
    ],
)
def test_modules_that_break_the_contract(tmp_path: Path, module: torch.nn.Module, reason: str) -> None:
    path = _script_to(tmp_path / "bad.pt", module)
    with pytest.raises(InvalidModel, match=reason):
        load_model(path, n_states=3, n_inputs=2)


def test_garbage_bytes(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(InvalidModel, match="not a model file of a supported format"):
        load_model(path)
    with pytest.raises(InvalidModel, match="not a loadable TorchScript file"):
        load_model(path, format="torchscript")


def test_a_zip_that_is_not_torchscript(tmp_path: Path) -> None:
    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes/readme.txt", "hello")
    with pytest.raises(InvalidModel, match="not a model file"):
        load_model(path)


def test_a_torch_save_checkpoint_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.GRU(N_IN, HIDDEN).state_dict(), path)
    with pytest.raises(InvalidModel, match="torch.save checkpoint, not TorchScript"):
        load_model(path)


def test_a_truncated_torchscript_file(tmp_path: Path) -> None:
    path = _script_to(tmp_path / "m.pt", GRUCellStep())
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(InvalidModel):
        load_model(path, format="torchscript")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    path = _script_to(tmp_path / "m.pt", GRUCellStep())
    with pytest.raises(InvalidModel, match="unsupported model format 'keras'"):
        load_model(path, format="keras")
    with pytest.raises(InvalidModel):
        load_model(path, format="onnx")  # a TorchScript file named as ONNX
    with pytest.raises(InvalidModel, match="dynamics must be"):
        load_model(path, dynamics="chaotic")  # type: ignore[arg-type]


def test_bidirectional_layers_are_refused() -> None:
    with pytest.raises(InvalidModel, match="bidirectional"):
        as_step_model(torch.nn.GRU(N_IN, HIDDEN, bidirectional=True))


def test_a_function_autograd_cannot_differentiate() -> None:
    def numpy_step(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.tanh(h.numpy()))

    with pytest.raises(InvalidModel, match="autograd cannot differentiate"):
        as_step_model(numpy_step, n_states=3, n_inputs=1)


def test_not_a_model_object() -> None:
    with pytest.raises(InvalidModel, match="not a model"):
        as_step_model("rnn.pt")
