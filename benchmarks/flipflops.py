"""The shipped 3-bit flip-flop networks with their initial states, as the benchmarks use them.

Each network is the TorchScript step map in ``tests/data/flipflop_{cell}.pt`` (16 units; the
LSTM's state packs [h, c]); its initial states are 1024 states sampled from 128 task trials run
through it, plus noise 0.5, the setting of FixedPointFinder's flip-flop example; the search runs
at zero input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from examples.flipflop.networks import CELLS, Cell, run_steps
from examples.flipflop.task import FlipFlopTask
from workers.engine import StepModel, load_model, sample_states

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
N_SAMPLES = 1024
NOISE_SCALE = 0.5
N_TRIALS = 128


@dataclass
class Case:
    """A model and its initial states."""

    name: str
    model: StepModel
    initial_states: np.ndarray
    n_inputs: int


def flipflop_step(cell: Cell) -> torch.nn.Module:
    """The shipped step map of ``cell``, ``forward(u, h) -> h_next``, as loaded from TorchScript."""
    return torch.jit.load(str(DATA / f"flipflop_{cell}.pt"))


def flipflop_case(cell: Cell) -> Case:
    """The shipped ``cell`` network, adapted once, and its initial states (``rng=0``)."""
    step = flipflop_step(cell)
    model = load_model(DATA / f"flipflop_{cell}.pt")
    task = FlipFlopTask()
    inputs, _ = task.sample(N_TRIALS, torch.Generator().manual_seed(11))
    with torch.no_grad():
        trajectories = run_steps(step, inputs, torch.zeros(N_TRIALS, model.n_states)).numpy()
    states = sample_states(trajectories, N_SAMPLES, noise_scale=NOISE_SCALE, rng=0)
    return Case(f"flipflop {cell}", model, states, task.n_bits)


def flipflop_cases() -> list[Case]:
    """The tanh, GRU and LSTM flip-flops."""
    return [flipflop_case(cell) for cell in CELLS]
