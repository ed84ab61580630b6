"""Record flip-flop trials through a trained step map: the data ``fpf demo`` ships beside each model.

``python -m examples.flipflop.recording --models tests/data --out client/fpf_client/data`` copies
the shipped TorchScript models into the client package and records their trials there.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch

from fpf_client.demo import FlipFlopRecording

from .export import load_readout, step_shapes
from .networks import CELLS, cell_weights, run_steps, step_from_weights
from .task import FlipFlopTask

#: Seed of the recorded trials (training used seed 0, evaluation seed 2).
RECORDING_SEED = 7


def record_trials(
    step: torch.nn.Module,
    readout: tuple[np.ndarray, np.ndarray],
    *,
    n_trials: int = 64,
    seed: int = RECORDING_SEED,
    task: FlipFlopTask | None = None,
) -> FlipFlopRecording:
    """Run ``n_trials`` fresh trials (of ``task``, default the training task) through ``step`` from the zero state."""
    inputs, targets = (task or FlipFlopTask()).sample(n_trials, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        states = run_steps(step, inputs, torch.zeros(n_trials, step_shapes(step)[1]))
    weight, bias = readout
    return FlipFlopRecording(inputs.numpy(), targets.numpy(), states.numpy(), weight, bias)


def shipped_step(cell: str, models: Path) -> torch.nn.Module:
    """The eager step map of the TorchScript model ``models/flipflop_{cell}.pt``."""
    return step_from_weights(cell, cell_weights(torch.jit.load(str(models / f"flipflop_{cell}.pt"))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="directory with flipflop_{cell}.pt and readouts")
    parser.add_argument("--out", type=Path, required=True, help="directory for the models and recordings")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    for cell in CELLS:
        step = shipped_step(cell, args.models)
        recording = record_trials(step, load_readout(args.models / f"flipflop_{cell}_readout.npz"))
        shutil.copyfile(args.models / f"flipflop_{cell}.pt", args.out / f"flipflop_{cell}.pt")
        recording.save(args.out / f"flipflop_{cell}.npz")
        print(f"{cell}: {args.out / f'flipflop_{cell}.npz'} ({recording.states.shape})")


if __name__ == "__main__":
    main()
