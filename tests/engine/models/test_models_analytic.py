"""Closed forms of single-layer RNN/GRU/LSTM steps: the step against the module's own forward,
the Jacobians against float64 finite differences.

TorchStepModel would quietly fall back to the module and autograd if a closed form disagreed,
so the formulas are tested on their own here.
"""

from __future__ import annotations

import pytest
import torch
from model_steps import HIDDEN, N_IN, central_differences, random_batch

from workers.engine.models import as_step_model
from workers.engine.models.analytic import analytic_jacobians, analytic_step


class UserLSTMStep(torch.nn.Module):
    """A user's own step around an LSTMCell, on the packed state [h, c] (or [c, h] when swapped)."""

    def __init__(self, swapped: bool = False) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(N_IN, HIDDEN)
        self.hidden = HIDDEN
        self.swapped = swapped

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        first, second = h[:, : self.hidden], h[:, self.hidden :]
        state = (second, first) if self.swapped else (first, second)
        h_next, c_next = self.cell(u, state)
        return torch.cat([c_next, h_next] if self.swapped else [h_next, c_next], dim=1)


LAYERS = {
    "rnn_tanh": lambda: torch.nn.RNN(N_IN, HIDDEN),
    "rnn_relu_no_bias": lambda: torch.nn.RNN(N_IN, HIDDEN, nonlinearity="relu", bias=False),
    "rnn_cell_relu": lambda: torch.nn.RNNCell(N_IN, HIDDEN, nonlinearity="relu"),
    "gru_batch_first": lambda: torch.nn.GRU(N_IN, HIDDEN, batch_first=True),
    "gru_cell_no_bias": lambda: torch.nn.GRUCell(N_IN, HIDDEN, bias=False),
    "lstm": lambda: torch.nn.LSTM(N_IN, HIDDEN),
    "lstm_cell": lambda: torch.nn.LSTMCell(N_IN, HIDDEN),
    "scripted_gru": lambda: torch.jit.script(torch.nn.GRU(N_IN, HIDDEN)),
    "scripted_lstm": lambda: torch.jit.script(torch.nn.LSTM(N_IN, HIDDEN)),
    "scripted_user_lstm_step": lambda: torch.jit.script(UserLSTMStep()),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_closed_forms_match_finite_differences(name: str) -> None:
    torch.manual_seed(0)
    checked = as_step_model(LAYERS[name]())
    assert "analytic" in checked._jacobian_path.correct  # its dry run found the closed form correct
    model = checked.to(dtype=torch.float64)
    closed_form = analytic_jacobians(model.fn)
    assert closed_form is not None
    h, u = random_batch(7, model.n_states, model.n_inputs)
    dfdh, dfdu = closed_form(h, u, True, True)
    torch.testing.assert_close(dfdh, central_differences(lambda x: model.step(x, u), h), atol=1e-8, rtol=1e-7)
    torch.testing.assert_close(dfdu, central_differences(lambda x: model.step(h, x), u), atol=1e-8, rtol=1e-7)
    (only_inputs,) = closed_form(h, u, False, True)
    torch.testing.assert_close(only_inputs, dfdu)


@pytest.mark.parametrize("name", list(LAYERS))
def test_closed_form_steps_match_the_modules_forward(name: str) -> None:
    """In float64, with inputs per sample and one input row broadcast to every sample."""
    torch.manual_seed(0)
    checked = as_step_model(LAYERS[name]())
    assert checked._step_path.chosen == "analytic"  # its dry run found the closed form correct
    model = checked.to(dtype=torch.float64)
    closed_form = analytic_step(model.fn)
    assert closed_form is not None
    h, u = random_batch(7, model.n_states, model.n_inputs)
    shared = u[:1].expand(len(h), -1)
    for inputs in (u, shared):
        with torch.no_grad():
            by_module = model._call(h, inputs)
        torch.testing.assert_close(closed_form(h, inputs), by_module, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(model.step(h, inputs), by_module, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", ["rnn_tanh", "gru_batch_first", "lstm_cell"])
def test_a_shared_input_row_is_projected_again_once_it_changes(name: str) -> None:
    """The step keeps what it computed from a broadcast input row: it must notice a row written in
    place, another row, and rows taken one per sample."""
    torch.manual_seed(1)
    model = as_step_model(LAYERS[name]()).to(dtype=torch.float64)
    h, u = random_batch(5, model.n_states, model.n_inputs)
    row = u[:1].clone()

    def check(inputs: torch.Tensor) -> None:
        with torch.no_grad():
            torch.testing.assert_close(model.step(h, inputs), model._call(h, inputs), atol=1e-12, rtol=1e-12)

    check(row.expand(len(h), -1))
    check(row.expand(len(h), -1))  # the kept projection
    row.mul_(-3.0)
    check(row.expand(len(h), -1))
    check(u[1:2].clone().expand(len(h), -1))
    check(u)


@pytest.mark.parametrize(
    "layer", [torch.nn.GRU(N_IN, HIDDEN, 2), torch.nn.LSTM(N_IN, HIDDEN, proj_size=2), torch.nn.Linear(2, 2)]
)
def test_no_closed_form_for_stacked_or_projected_layers(layer: torch.nn.Module) -> None:
    fn = as_step_model(layer).fn if not isinstance(layer, torch.nn.Linear) else layer
    assert analytic_jacobians(fn) is None
    assert analytic_step(fn) is None


def test_a_wrapped_lstm_cell_with_another_packing_keeps_autograd() -> None:
    torch.manual_seed(0)
    model = as_step_model(torch.jit.script(UserLSTMStep(swapped=True)), n_states=2 * HIDDEN, n_inputs=N_IN)
    assert "analytic" not in model._jacobian_path.correct  # offered, checked, refused
    assert model._step_path.chosen == "module"
    model = model.to(dtype=torch.float64)
    h, u = random_batch(7, model.n_states, model.n_inputs)
    torch.testing.assert_close(
        model.jacobian_states(h, u), central_differences(lambda x: model.step(x, u), h), atol=1e-8, rtol=1e-7
    )
