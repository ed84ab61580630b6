"""Exact derivatives of every torch backend against float64 central finite differences.

Each model is checked at a batch large enough to trigger the one-time choice of the
Jacobian path, and three times in a row (TorchScript's optimised executor broke
derivatives from the second call on).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from model_steps import (
    HIDDEN,
    N_IN,
    GRUCellStep,
    InPlaceLSTMStep,
    LSTMLayerStep,
    NumpyBackwardStep,
    RateStep,
    central_differences,
    random_batch,
)

from workers.engine.models import StepModel, as_step_model, load_model, torch_step

N = 150  # above the batch size from which the Jacobian path is timed and fixed
TOL = 1e-7


@pytest.fixture(autouse=True)
def _one_thread_and_seed() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _saved(module: torch.nn.Module, path: Path, how: str, d: int = HIDDEN, **hints: int) -> StepModel:
    """Script or trace ``module``, save it to ``path`` and load it back."""
    h, u = torch.randn(2, d), torch.randn(2, N_IN)
    exported = torch.jit.script(module) if how == "script" else torch.jit.trace(module, (u, h))
    torch.jit.save(exported, str(path))
    return load_model(path, **hints)


CASES: dict[str, Callable[[Path], StepModel]] = {
    "rnn_tanh": lambda _: as_step_model(torch.nn.RNN(N_IN, HIDDEN)),
    "rnn_tanh_2layers_batch_first": lambda _: as_step_model(torch.nn.RNN(N_IN, HIDDEN, 2, batch_first=True)),
    "gru": lambda _: as_step_model(torch.nn.GRU(N_IN, HIDDEN)),
    "gru_2layers_batch_first": lambda _: as_step_model(torch.nn.GRU(N_IN, HIDDEN, 2, batch_first=True)),
    "lstm": lambda _: as_step_model(torch.nn.LSTM(N_IN, HIDDEN)),
    "lstm_batch_first": lambda _: as_step_model(torch.nn.LSTM(N_IN, HIDDEN, batch_first=True)),
    "lstm_2layers": lambda _: as_step_model(torch.nn.LSTM(N_IN, HIDDEN, 2)),
    "lstm_2layers_batch_first": lambda _: as_step_model(torch.nn.LSTM(N_IN, HIDDEN, 2, batch_first=True)),
    "lstm_cell": lambda _: as_step_model(torch.nn.LSTMCell(N_IN, HIDDEN)),
    "scripted_lstm_file": lambda p: _saved(torch.nn.LSTM(N_IN, HIDDEN, 2), p / "lstm.pt", "script"),
    "scripted_gru_step_file": lambda p: _saved(GRUCellStep(), p / "gru_step.pt", "script"),
    "traced_gru_step_file": lambda p: _saved(GRUCellStep(), p / "gru_trace.pt", "trace"),
    "traced_inplace_lstm_step_file": lambda p: _saved(
        InPlaceLSTMStep(), p / "lstm_inplace.pt", "trace", 2 * HIDDEN, n_states=2 * HIDDEN, n_inputs=N_IN
    ),
    "traced_lstm_layer_step_file": lambda p: _saved(LSTMLayerStep(), p / "lstm_layer.pt", "trace", 2 * HIDDEN),
    "plain_module": lambda _: as_step_model(RateStep(), dynamics="continuous"),
    "numpy_backward_module": lambda _: as_step_model(NumpyBackwardStep()),
}


@pytest.mark.parametrize("small_batch", [True, False], ids=["repeated-batch", "per-model-path"])
@pytest.mark.parametrize("case", list(CASES))
def test_derivatives_match_finite_differences(case: str, small_batch: bool, tmp_path: Path, monkeypatch) -> None:
    if not small_batch:  # every batch takes the path chosen by timing, as large batches do
        monkeypatch.setattr(torch_step, "REPLICATE_MAX_ROWS", 0)
    model = CASES[case](tmp_path).to(dtype=torch.float64)
    h, u = random_batch(N, model.n_states, model.n_inputs)
    v, w = random_batch(N, model.n_states, model.n_states, seed=1)
    dfdh_fd = central_differences(lambda x: model.step(x, u), h)
    dfdu_fd = central_differences(lambda x: model.step(h, x), u)
    for _ in range(3):
        dfdh, dfdu = model.jacobian_states(h, u), model.jacobian_inputs(h, u)
        torch.testing.assert_close(dfdh, dfdh_fd, atol=TOL, rtol=TOL)
        torch.testing.assert_close(dfdu, dfdu_fd, atol=TOL, rtol=TOL)
        both = model.jacobians(h, u)
        torch.testing.assert_close(both[0], dfdh_fd, atol=TOL, rtol=TOL)
        torch.testing.assert_close(both[1], dfdu_fd, atol=TOL, rtol=TOL)
        f, jv = model.jvp(h, u, v)
        torch.testing.assert_close(f, model.step(h, u))
        torch.testing.assert_close(jv, torch.einsum("nij,nj->ni", dfdh_fd, v), atol=TOL, rtol=TOL)
        f, wj = model.vjp(h, u, w)
        torch.testing.assert_close(f, model.step(h, u))
        torch.testing.assert_close(wj, torch.einsum("ni,nij->nj", w, dfdh_fd), atol=TOL, rtol=TOL)
    paths = model.derivative_paths
    assert paths["jvp"] is not None
    if paths["jacobian"] != "analytic":  # closed forms serve every batch size
        if small_batch:
            assert paths["small_batch_jacobian"] == "replicated"  # correct for every case here
        else:
            assert paths["jacobian"] is not None  # chosen at this batch size


def test_numpy_backward_falls_back_to_plain_backward_passes(monkeypatch) -> None:
    """vmap, forward mode and double backward all fail through a numpy backward; a plain backward
    pass over the repeated batch works."""
    model = as_step_model(NumpyBackwardStep().double())
    h, u = random_batch(N, model.n_states, model.n_inputs)
    model.jacobian_states(h, u)
    monkeypatch.setattr(torch_step, "REPLICATE_MAX_ROWS", 0)
    model.jacobian_states(h, u)
    model.jvp(h, u, h)
    assert model.derivative_paths == {"jacobian": "loop", "small_batch_jacobian": "replicated", "jvp": "jacobian"}


def test_lambda_step_function() -> None:
    W = torch.randn(3, 3, dtype=torch.float64)
    B = torch.randn(3, 2, dtype=torch.float64)
    model = as_step_model(lambda u, h: torch.tanh(h @ W.T + u @ B.T), n_states=3, n_inputs=2)
    assert model.dtype == torch.float64  # its weights refuse float32 inputs
    h, u = random_batch(N, 3, 2)
    z = h @ W.T + u @ B.T
    sech2 = 1 - torch.tanh(z) ** 2
    torch.testing.assert_close(model.jacobian_states(h, u), sech2[:, :, None] * W, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(model.jacobian_inputs(h, u), sech2[:, :, None] * B, atol=1e-12, rtol=1e-12)


def test_continuous_rate_network_jacobians_are_analytic() -> None:
    """f(h, u) = -h + tanh(W h + B u): df/dh = -I + diag(sech^2 z) W, df/du = diag(sech^2 z) B."""
    net = RateStep(d=6, m=2).double()
    model = as_step_model(net, dynamics="continuous")
    assert model.describe() == {"format": "torch", "n_states": 6, "n_inputs": 2, "dynamics": "continuous"}
    h, u = random_batch(N, 6, 2)
    W, B = net.W.detach(), net.B.detach()
    sech2 = 1 - torch.tanh(h @ W.T + u @ B.T) ** 2
    dfdh, dfdu = model.jacobians(h, u)
    torch.testing.assert_close(dfdh, -torch.eye(6, dtype=torch.float64) + sech2[:, :, None] * W, atol=1e-12, rtol=0)
    torch.testing.assert_close(dfdu, sech2[:, :, None] * B, atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_state_packing(batch_first: bool) -> None:
    """h = [h_layer1, h_layer2, c_layer1, c_layer2], as documented: compare with the layer itself."""
    lstm = torch.nn.LSTM(N_IN, HIDDEN, 2, batch_first=batch_first).double()
    model = as_step_model(lstm)
    assert (model.n_states, model.n_inputs) == (4 * HIDDEN, N_IN)
    h, u = random_batch(5, 4 * HIDDEN, N_IN)
    h0 = h[:, : 2 * HIDDEN].reshape(5, 2, HIDDEN).transpose(0, 1).contiguous()
    c0 = h[:, 2 * HIDDEN :].reshape(5, 2, HIDDEN).transpose(0, 1).contiguous()
    x = u[:, None] if batch_first else u[None]
    _, (h1, c1) = lstm(x, (h0, c0))
    expected = torch.cat([h1[0], h1[1], c1[0], c1[1]], dim=1)
    torch.testing.assert_close(model.step(h, u), expected)


def test_inputs_broadcast_from_one_row() -> None:
    model = as_step_model(torch.nn.GRU(N_IN, HIDDEN).double())
    h, u = random_batch(6, HIDDEN, N_IN)
    one = u[:1]
    torch.testing.assert_close(model.step(h, one), model.step(h, one.expand(6, N_IN)))
    torch.testing.assert_close(model.jacobian_inputs(h, one), model.jacobian_inputs(h, one.expand(6, N_IN)))


def test_to_copies_and_leaves_the_callers_module_alone() -> None:
    gru = torch.nn.GRU(N_IN, HIDDEN)
    gru.train()
    model = as_step_model(gru)
    assert model.to() is model and model.to(dtype=torch.float32) is model
    wide = model.to(dtype=torch.float64)
    assert model.to("cpu", torch.float64) is wide  # one copy per (device, dtype), reused by every job
    assert (wide.dtype, model.dtype, gru.weight_hh_l0.dtype) == (torch.float64, torch.float32, torch.float32)
    assert gru.training and gru.weight_hh_l0.requires_grad
    h, u = random_batch(4, HIDDEN, N_IN)
    torch.testing.assert_close(wide.step(h, u).float(), model.step(h.float(), u.float()))
    with pytest.raises(ValueError):
        model.to(dtype=torch.float16)


def test_scripted_module_casts_to_float64(tmp_path: Path) -> None:
    model = _saved(GRUCellStep(), tmp_path / "m.pt", "script")
    assert model.dtype == torch.float32
    wide = model.to(dtype=torch.float64)
    h, u = random_batch(3, HIDDEN, N_IN)
    assert wide.step(h, u).dtype == torch.float64
    assert model.step(h.float(), u.float()).dtype == torch.float32
