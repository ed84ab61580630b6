"""The flip-flop exports: TorchScript, ONNX and SavedModel files of the shipped networks load in fpf
and compute the trained step, and its Jacobian, as the shipped TorchScript file does.

Ground truth is the shipped TorchScript model run by torch in float64; Jacobians are compared
with its central finite differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from examples.flipflop.export import FORMATS, export_step
from examples.flipflop.networks import CELLS
from examples.flipflop.recording import shipped_step
from workers.engine import load_model

DATA = Path(__file__).resolve().parents[1] / "data"
N_STATES = {"tanh": 16, "gru": 16, "lstm": 32}


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    return tmp_path_factory.mktemp("exports")


def _reference(cell: str) -> torch.jit.ScriptModule:
    return torch.jit.load(str(DATA / f"flipflop_{cell}.pt")).double()


def _finite_difference_jacobian(step: torch.nn.Module, h: np.ndarray, u: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """dF/dh of ``step`` at each row of h, (n, d, d), by central differences in float64."""
    d = h.shape[1]
    u64 = torch.as_tensor(u, dtype=torch.float64)
    columns = []
    with torch.no_grad():
        for j in range(d):
            shift = np.zeros(d)
            shift[j] = eps
            plus = step(u64, torch.as_tensor(h + shift, dtype=torch.float64))
            minus = step(u64, torch.as_tensor(h - shift, dtype=torch.float64))
            columns.append(((plus - minus) / (2 * eps)).numpy())
    return np.stack(columns, axis=2)


@pytest.mark.parametrize("format", list(FORMATS))
@pytest.mark.parametrize("cell", CELLS)
def test_exports_compute_the_shipped_step_and_its_jacobian(cell: str, format: str, export_dir: Path) -> None:
    path = export_step(cell, shipped_step(cell, DATA), format, export_dir)
    assert path.name == f"flipflop_{cell}{FORMATS[format]}"
    model = load_model(path)  # the format is detected from the file, as at upload
    assert (model.n_states, model.n_inputs) == (N_STATES[cell], 3)

    rng = np.random.default_rng(0)
    h = rng.normal(scale=0.8, size=(6, N_STATES[cell])).astype(np.float32)
    u = rng.choice([-1.0, 0.0, 1.0], size=(6, 3)).astype(np.float32)
    reference = _reference(cell)
    with torch.no_grad():
        expected = reference(torch.as_tensor(u, dtype=torch.float64), torch.as_tensor(h, dtype=torch.float64))
        got = model.step(torch.as_tensor(h), torch.as_tensor(u))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=2e-6)
    jacobian = model.jacobian_states(torch.as_tensor(h), torch.as_tensor(u)).numpy()
    np.testing.assert_allclose(jacobian, _finite_difference_jacobian(reference, h.astype(float), u), atol=2e-5)


def test_an_unknown_format_is_refused(export_dir: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        export_step("tanh", shipped_step("tanh", DATA), "pickle", export_dir)
