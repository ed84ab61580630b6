"""The flip-flop example package: task generator, step maps and training (no engine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from examples.flipflop.networks import CELLS, FlipFlopNetwork, readout_arrays, run_steps, step_module
from examples.flipflop.task import FlipFlopTask, sign_accuracy
from examples.flipflop.train import TrainingConfig, train_network


def _held_sign_reference(inputs: np.ndarray) -> np.ndarray:
    """The target by the task's definition, one loop per entry: the last non-zero pulse."""
    targets = np.zeros_like(inputs)
    for trial in range(inputs.shape[0]):
        for bit in range(inputs.shape[2]):
            held = 0.0
            for t in range(inputs.shape[1]):
                if inputs[trial, t, bit] != 0:
                    held = inputs[trial, t, bit]
                targets[trial, t, bit] = held
    return targets


def test_targets_hold_the_last_pulse_and_start_at_a_corner() -> None:
    inputs, targets = FlipFlopTask(n_time=40, p_pulse=0.2).sample(16, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(targets.numpy(), _held_sign_reference(inputs.numpy()))
    assert set(np.unique(inputs.numpy())) == {-1.0, 0.0, 1.0}
    assert np.all(np.abs(inputs[:, 0].numpy()) == 1)
    assert np.all(np.abs(targets.numpy()) == 1)


def test_trials_are_reproducible_from_the_generator_seed() -> None:
    task = FlipFlopTask()
    first = task.sample(8, torch.Generator().manual_seed(7))
    again = task.sample(8, torch.Generator().manual_seed(7))
    other = task.sample(8, torch.Generator().manual_seed(8))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("cell", CELLS)
def test_step_map_reproduces_torch_layer(cell: str) -> None:
    """The hand-written step map, iterated, gives torch's own nn.RNN/GRU/LSTM outputs (float64)."""
    torch.manual_seed(0)
    network = FlipFlopNetwork(cell, n_hidden=8).double()
    inputs, _ = FlipFlopTask(n_time=20).sample(5, torch.Generator().manual_seed(1))
    inputs = inputs.double() + 0.3 * torch.randn(inputs.shape, dtype=torch.float64)
    step = torch.jit.script(step_module(network))
    d = 16 if cell == "lstm" else 8
    with torch.no_grad():
        states = run_steps(step, inputs, torch.zeros(5, d, dtype=torch.float64))
        expected = network(inputs)
        readout = readout_arrays(network)
        outputs = states @ readout["weight"].T + readout["bias"]
    torch.testing.assert_close(outputs, expected, rtol=0, atol=1e-12)


def test_training_is_deterministic() -> None:
    config = TrainingConfig(n_steps=30)
    first, again = (train_network("gru", seed=4, config=config) for _ in range(2))
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    other = train_network("gru", seed=5, config=config)
    assert not torch.equal(first.readout.weight, other.readout.weight)


def test_sign_accuracy_counts_entries() -> None:
    targets = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert sign_accuracy(torch.tensor([[0.2, -3.0], [-0.1, 2.0]]), targets) == 0.75
