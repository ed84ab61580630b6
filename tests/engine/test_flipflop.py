"""The shipped flip-flop networks (tests/data/flipflop_*) and what the engine finds in them.

Ground truth is the task itself (sign accuracy on fresh trials) and the dynamics, checked
without the engine's own analysis: stable points attract when iterated, each index-1 saddle's
unstable manifold runs to two different memories, and residuals are recomputed in float64.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from examples.flipflop.export import load_readout
from examples.flipflop.networks import CELLS, run_steps
from examples.flipflop.task import FlipFlopTask, sign_accuracy
from fpf_client.fixed_points import FixedPoints
from workers.engine import find_fixed_points, load_model, sample_states

DATA = Path(__file__).resolve().parents[1] / "data"
N_STATES = {"tanh": 16, "gru": 16, "lstm": 32}
CORNERS = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=float)


def _shipped(cell: str) -> tuple[torch.jit.ScriptModule, np.ndarray, np.ndarray]:
    weight, bias = load_readout(DATA / f"flipflop_{cell}_readout.npz")
    return torch.jit.load(str(DATA / f"flipflop_{cell}.pt")), weight, bias


def _iterate(step: torch.nn.Module, x: np.ndarray, n_steps: int) -> np.ndarray:
    """F applied n_steps times at zero input, in float64."""
    h = torch.as_tensor(x, dtype=torch.float64)
    u = torch.zeros(len(h), 3, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(n_steps):
            h = step(u, h)
    return h.numpy()


@pytest.fixture(scope="module", params=CELLS)
def analysed(request: pytest.FixtureRequest) -> tuple[str, FixedPoints, torch.nn.Module, np.ndarray, np.ndarray]:
    """(cell, isolated fixed points, float64 step, readout weight, bias) from 1024 noisy trajectory states."""
    torch.set_num_threads(1)
    cell = request.param
    step, weight, bias = _shipped(cell)
    inputs, _ = FlipFlopTask().sample(128, torch.Generator().manual_seed(11))
    with torch.no_grad():
        trajectories = run_steps(step, inputs, torch.zeros(128, N_STATES[cell])).numpy()
    initial_states = sample_states(trajectories, 1024, noise_scale=0.5, rng=0)
    fps = find_fixed_points(step, initial_states, np.zeros((1, 3), dtype=np.float32))
    # Saturated GRU/LSTM gates make whole regions where F(h) = h in float32: the engine returns
    # those points flagged non-isolated (an eigenvalue at 1). The memories are the isolated roots.
    return cell, fps[~fps.is_nonisolated], step.double(), weight, bias


@pytest.mark.parametrize("cell", CELLS)
def test_shipped_models_hold_three_bits_on_fresh_trials(cell: str) -> None:
    step, weight, bias = _shipped(cell)
    inputs, targets = FlipFlopTask().sample(1024, torch.Generator().manual_seed(2024))
    with torch.no_grad():
        states = run_steps(step, inputs, torch.zeros(1024, N_STATES[cell]))
    outputs = states @ torch.as_tensor(weight).T + torch.as_tensor(bias)
    assert sign_accuracy(outputs, targets) == 1.0


@pytest.mark.parametrize("cell", CELLS)
def test_engine_reads_the_shapes_off_the_file(cell: str) -> None:
    model = load_model(DATA / f"flipflop_{cell}.pt")
    assert (model.n_states, model.n_inputs) == (N_STATES[cell], 3)


def test_eight_stable_points_one_per_memory(analysed) -> None:
    cell, fps, step, weight, bias = analysed
    stable = fps.stable
    assert stable.n == 8, f"{cell}: {stable.n} stable points"
    outputs = stable.xstar @ weight.T + bias
    nearest = np.argmin(((outputs[:, None, :] - CORNERS[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest) == list(range(8)), f"{cell}: corners {nearest}"
    # Attractors, judged by the dynamics: small perturbations return.
    rng = np.random.default_rng(1)
    perturbed = np.repeat(stable.xstar, 4, axis=0) + 1e-2 * rng.standard_normal((32, stable.n_states))
    returned = _iterate(step, perturbed, 3000)
    assert np.abs(returned - np.repeat(stable.xstar, 4, axis=0)).max() < 1e-3


def test_points_are_roots_in_float64(analysed) -> None:
    cell, fps, step, *_ = analysed
    residual = _iterate(step, fps.xstar, 1) - fps.xstar
    assert np.abs(residual).max() < 1e-5, cell


def test_index_one_saddles_separate_two_memories(analysed) -> None:
    cell, fps, step, *_ = analysed
    saddles = fps[fps.n_unstable == 1]
    assert saddles.n >= 4, f"{cell}: {saddles.n} index-1 saddles"
    # The unstable eigenvector (largest |lambda|, first) points to the two memories the saddle separates.
    direction = np.real(saddles.eigvec_J_xstar[:, :, 0])
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    ends = _iterate(step, np.concatenate([saddles.xstar + 1e-3 * direction, saddles.xstar - 1e-3 * direction]), 5000)
    stable = fps.stable.xstar
    distance = np.abs(ends[:, None, :] - stable[None]).max(-1)
    memory = distance.argmin(1)
    assert distance.min(1).max() < 1e-3, f"{cell}: a branch ended away from every stable point"
    plus, minus = memory[: saddles.n], memory[saddles.n :]
    assert np.all(plus != minus), f"{cell}: a saddle whose two branches reach the same memory"
