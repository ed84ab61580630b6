"""What the client checks and packs before anything reaches the network."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fpf_client.errors import (
    InvalidArray,
    InvalidModel,
    InvalidOptions,
    NonFinite,
    ShapeMismatch,
)
from fpf_client.payloads import (
    arrays_payload,
    is_local_model,
    model_file,
    options_payload,
)


def test_options_keep_only_what_the_user_set_as_json():
    assert options_payload({"method": "adam", "tol_q": 1e-10}) == {"method": "adam", "tol_q": 1e-10}
    assert options_payload({}) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tol_qq": 1e-10}, "unknown option 'tol_qq'"),
        ({"method": "lbfgs"}, "method: Input should be 'auto', "),
        ({"max_iters": 0}, "max_iters: Input should be greater than or equal to 1"),
        ({"q_slow": 1e-14}, "q_slow must be larger than tol_q"),
    ],
)
def test_bad_options_fail_locally_with_a_readable_reason(options, message):
    with pytest.raises(InvalidOptions, match=message):
        options_payload(options)


def test_arrays_travel_as_npz_without_pickles():
    states = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    payload = arrays_payload(states, [[1, 2]])
    with np.load(io.BytesIO(payload.npz), allow_pickle=False) as data:
        assert np.array_equal(data["initial_states"], states) and data["initial_states"].dtype == np.float32
        assert data["inputs"].dtype == np.float64 and data["inputs"].tolist() == [[1.0, 2.0]]
    assert (payload.n_states, payload.n_inputs) == (3, 2)


def test_torch_tensors_and_single_vectors_are_accepted():
    states = torch.randn(5, 3, requires_grad=True)
    payload = arrays_payload(states, torch.zeros(2))
    with np.load(io.BytesIO(payload.npz)) as data:
        assert np.array_equal(data["initial_states"], states.detach().numpy())
        assert data["inputs"].shape == (1, 2)


@pytest.mark.parametrize(
    ("states", "inputs", "error", "message"),
    [
        (np.zeros((2, 3, 1)), None, ShapeMismatch, "must be 2-D"),
        (np.zeros((0, 3)), None, ShapeMismatch, "no rows"),
        (np.zeros((4, 3)), np.zeros((2, 1)), ShapeMismatch, "expected 1 or 4"),
        (np.array([[0.0, np.inf], [np.nan, 1.0]]), None, NonFinite, "2 non-finite values"),
        (np.array([["a", "b"]]), None, InvalidArray, "real numbers"),
        (np.zeros((1, 2), dtype=complex), None, InvalidArray, "real numbers"),
    ],
)
def test_bad_arrays_fail_locally(states, inputs, error, message):
    with pytest.raises(error, match=message):
        arrays_payload(states, inputs)


class TanhStep(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.RNNCell(2, 4)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.cell(u, h)


class Unscriptable(torch.nn.Module):
    def forward(self, u, h, **extra):  # **kwargs cannot be scripted
        return h


def test_a_module_is_scripted_to_torchscript_that_computes_the_same():
    module = TanhStep()
    upload = model_file(module)
    assert upload.filename == "TanhStep.pt"
    loaded = torch.jit.load(io.BytesIO(upload.content))
    u, h = torch.randn(3, 2), torch.randn(3, 4)
    torch.testing.assert_close(loaded(u, h), module(u, h), rtol=0, atol=0)


def test_an_unscriptable_module_says_how_to_trace_it():
    with pytest.raises(InvalidModel, match=r"torch\.jit\.trace\(module, \(u, h\)\)"):
        model_file(Unscriptable())


def test_files_and_modules_are_uploaded_ids_are_not(tmp_path):
    path = tmp_path / "rnn.pt"
    path.write_bytes(b"bytes")
    assert is_local_model(str(path)) and is_local_model(path) and is_local_model(TanhStep())
    assert not is_local_model("3f2a" * 16)
    assert model_file(path).content == b"bytes" and model_file(str(path)).filename == "rnn.pt"
