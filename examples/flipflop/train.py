"""Train the flip-flop networks, deterministically, on one CPU thread (under a minute each).

``python -m examples.flipflop.train --out DIR`` writes ``flipflop_{tanh,gru,lstm}.pt``
(TorchScript step maps) and ``flipflop_*_readout.npz`` into DIR; with the default seed
these are the files shipped in ``tests/data``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .export import export_network
from .networks import CELLS, Cell, FlipFlopNetwork
from .task import FlipFlopTask, sign_accuracy


@dataclass(frozen=True)
class TrainingConfig:
    """Hyper-parameters of :func:`train_network`; the defaults reach 100% sign accuracy on every cell."""

    n_hidden: int = 16
    batch_size: int = 128
    n_steps: int = 2000
    learning_rate: float = 1e-2
    input_noise: float = 0.1


def train_network(
    cell: Cell, *, seed: int = 0, task: FlipFlopTask = FlipFlopTask(), config: TrainingConfig = TrainingConfig()
) -> FlipFlopNetwork:
    """Train one network with Adam on fresh trials, the learning rate annealed to 0 on a cosine.

    Annealing lets the last steps fit the rare hard transitions (pulses on consecutive steps);
    Gaussian noise on the inputs makes the memory states robust attractors. Deterministic
    for a given seed and thread count.
    """
    torch.manual_seed(seed)
    network = FlipFlopNetwork(cell, n_hidden=config.n_hidden, n_bits=task.n_bits)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.n_steps)
    data = torch.Generator().manual_seed(seed)
    for _ in range(config.n_steps):
        inputs, targets = task.sample(config.batch_size, data)
        noisy = inputs + config.input_noise * torch.randn(inputs.shape, generator=data)
        loss = torch.nn.functional.mse_loss(network(noisy), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return network.eval()


def evaluate(network: FlipFlopNetwork, task: FlipFlopTask, n_trials: int, seed: int) -> tuple[float, float]:
    """Sign accuracy and mean-squared error of ``network`` on ``n_trials`` fresh trials."""
    inputs, targets = task.sample(n_trials, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        outputs = network(inputs)
    return sign_accuracy(outputs, targets), float(((outputs - targets) ** 2).mean())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the .pt and .npz files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cells", nargs="+", choices=CELLS, default=list(CELLS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    task = FlipFlopTask()
    for cell in args.cells:
        start = time.perf_counter()
        network = train_network(cell, seed=args.seed, task=task)
        accuracy, mse = evaluate(network, task, n_trials=1024, seed=args.seed + 2)
        paths = export_network(network, args.out)
        print(
            f"{cell}: {time.perf_counter() - start:.1f} s, sign accuracy {accuracy:.2%}, mse {mse:.2e}"
            f" -> {', '.join(str(p) for p in paths)}"
        )


if __name__ == "__main__":
    main()
