"""torch.export programs (.pt2) as a model format, and the common export mistakes refused with their fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch_exports as tx

from fpf_client.errors import InvalidModel
from workers.engine.models import as_step_model, detect_format, load_model

torch.set_num_threads(1)


@pytest.mark.parametrize("kind, layers, batch_first", [("GRU", 2, True), ("LSTM", 2, False)])
def test_a_program_gives_the_map_and_jacobians_of_the_scripted_layer(
    tmp_path: Path, kind: str, layers: int, batch_first: bool
) -> None:
    layer = tx.seeded_layer(kind, num_layers=layers, batch_first=batch_first, seed=1)
    d = tx.n_states(layer)
    path = tx.export_program(tx.RecurrentStep(layer), d, tx.N_INPUTS, tmp_path / "step.pt2")
    assert detect_format(path) == "torch_export"
    model = load_model(path)
    reference = as_step_model(torch.jit.script(layer))
    assert (model.format, model.n_states, model.n_inputs) == ("torch_export", d, tx.N_INPUTS)
    h, u = torch.randn(6, d), torch.randn(6, tx.N_INPUTS)
    torch.testing.assert_close(model.step(h, u), reference.step(h, u))
    torch.testing.assert_close(model.jacobian_states(h, u), reference.jacobian_states(h, u))
    torch.testing.assert_close(model.jacobian_inputs(h, u), reference.jacobian_inputs(h, u))
    v = torch.randn(6, d)
    torch.testing.assert_close(model.jvp(h, u, v)[1], reference.jvp(h, u, v)[1])
    double = model.to(dtype=torch.float64)
    torch.testing.assert_close(
        double.step(h.double(), u.double()), reference.to(dtype=torch.float64).step(h.double(), u.double())
    )


def test_a_fixed_batch_is_refused_with_the_fix(tmp_path: Path) -> None:
    step = tx.RecurrentStep(tx.seeded_layer("RNN", num_layers=1, batch_first=False, seed=0))
    program = torch.export.export(step, (torch.zeros(2, tx.N_INPUTS), torch.zeros(2, tx.N_UNITS)))
    torch.export.save(program, str(tmp_path / "fixed.pt2"))
    with pytest.raises(InvalidModel, match=r"fixed batch size 2: export with dynamic_shapes="):
        load_model(tmp_path / "fixed.pt2")


@torch.library.custom_op("fpftest::leak", mutates_args=())
def _leak(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@_leak.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


class _CallsACustomOp(torch.nn.Module):
    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.ops.fpftest.leak(torch.tanh(h)) + u.sum(1, keepdim=True)


def test_ops_outside_aten_are_refused_by_name(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        _CallsACustomOp(), (torch.zeros(2, 1), torch.zeros(2, 3)), dynamic_shapes=({0: batch}, {0: batch})
    )
    torch.export.save(program, str(tmp_path / "custom.pt2"))
    with pytest.raises(InvalidModel, match=r"fpftest\.leak\.default \(node 'leak' in the graph\)"):
        load_model(tmp_path / "custom.pt2")


class _ReturnsOutputAndStates(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.GRUCell(2, 3)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h_next = self.cell(u, h)
        return h_next, [h_next]


def test_a_cell_returning_output_and_states_is_told_what_to_return() -> None:
    with pytest.raises(InvalidModel, match=r"returned \(output, \[state\]\).*return the next state itself"):
        as_step_model(_ReturnsOutputAndStates(), n_states=3, n_inputs=2)


def test_a_half_precision_model_is_told_to_convert() -> None:
    with pytest.raises(InvalidModel, match=r"float16: fixed points need float32 or float64; convert it with model"):
        as_step_model(torch.nn.GRUCell(2, 3).half())


def test_a_state_size_hint_that_does_not_match_says_how_to_count() -> None:
    with pytest.raises(InvalidModel, match=r"n_states=3 does not match .*LSTMCell.*\(6\): .*\[h, c\] has 2·H"):
        as_step_model(torch.nn.LSTMCell(2, 3), n_states=3)
