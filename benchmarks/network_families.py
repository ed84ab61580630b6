"""Speed that holds: fpf's default search against its Adam port on families of networks, not one network.

A single network per size says little about a default: it may have been tuned on that network.
This benchmark draws several seeds from each family and reports the minimum and median ratio
(adam's wall time over the default ``auto``'s) per family, with the roots each found:

- ``tanh0.5`` .. ``tanh1.5``: ``nn.RNNCell`` (tanh) with W_hh ~ g N(0, 1/d) for gain g;
- ``gru``, ``lstm``: ``nn.GRUCell`` / ``nn.LSTMCell`` with PyTorch's default initialisation;
- ``flipflop-tanh``, ``flipflop-gru``, ``flipflop-lstm``: 16-unit 3-bit flip-flop networks
  trained from each seed (``examples/flipflop/train.py``; ``--train-steps`` trades accuracy for time).

Initial states: 1024 sampled from 64 trajectories of 100 steps driven by N(0, 1) inputs (trained
networks: task trials, plus noise 0.5 as in the walkthrough); zero input for the search. Both
methods receive the same adapted StepModel and run in this process on the same threads; timed
calls alternate between the methods and the best of ``--repeats`` counts.

Seeds are split in two halves: defaults may be tuned on the even seeds ("tuning") and are
reported on the odd ones ("held out"); the shipped flip-flops and the random networks of
``engine_vs_adam`` use seed 0, so every odd seed is a network the engine was never tuned on.

Run from the repository root: ``OMP_NUM_THREADS=1 python -m benchmarks.network_families
[--families tanh0.9 gru ...] [--sizes 64] [--seeds 6] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from examples.flipflop.networks import run_steps, step_module
from examples.flipflop.task import FlipFlopTask
from examples.flipflop.train import TrainingConfig, train_network
from fpf_client.fixed_points import FixedPoints
from workers.engine import StepModel, as_step_model, find_fixed_points, sample_states

N_SAMPLES = 1024
N_INPUTS = 3
RANDOM_FAMILIES = ("tanh0.5", "tanh0.9", "tanh1.2", "tanh1.5", "gru", "lstm")
TRAINED_FAMILIES = ("flipflop-tanh", "flipflop-gru", "flipflop-lstm")
METHODS = ("auto", "adam")
#: Two points are the same root within this max-norm distance (the engine's default tol_unique).
SAME_ROOT_TOL = 1e-3


@dataclass
class Network:
    """One member of a family, ready to solve."""

    family: str
    seed: int
    model: StepModel
    initial_states: np.ndarray


@dataclass
class Outcome:
    """Both methods on one network."""

    network: Network
    wall_s: dict[str, float]
    roots: dict[str, FixedPoints]

    @property
    def ratio(self) -> float:
        return self.wall_s["adam"] / self.wall_s["auto"]

    def missed_by_auto(self) -> int:
        """Isolated roots adam found that auto did not."""
        return _count_not_in(_isolated(self.roots["adam"]), _isolated(self.roots["auto"]))


def _isolated(points: FixedPoints) -> np.ndarray:
    if not points.n:
        return np.empty((0, points.n_states))
    keep = np.ones(points.n, bool) if points.is_nonisolated is None else ~points.is_nonisolated
    return points.xstar[keep]


def _count_not_in(a: np.ndarray, b: np.ndarray) -> int:
    if not len(a):
        return 0
    if not len(b):
        return len(a)
    distances = np.abs(a[:, None, :] - b[None, :, :]).max(axis=-1)
    return int((distances.min(axis=1) > SAME_ROOT_TOL).sum())


def random_cell(family: str, d: int, seed: int) -> torch.nn.Module:
    """A default-initialised cell of ``family``; tanh cells get W_hh ~ gain N(0, 1/d)."""
    torch.manual_seed(seed)
    if family == "gru":
        return torch.nn.GRUCell(N_INPUTS, d)
    if family == "lstm":
        return torch.nn.LSTMCell(N_INPUTS, d)
    cell = torch.nn.RNNCell(N_INPUTS, d)
    gain = float(family.removeprefix("tanh"))
    with torch.no_grad():
        cell.weight_hh.copy_(gain * torch.randn(d, d) / np.sqrt(d))
    return cell


def random_network(family: str, d: int, seed: int) -> Network:
    """States from 64 input-driven trajectories of the step model itself (packed state for LSTM)."""
    model = as_step_model(random_cell(family, d, seed).requires_grad_(False).eval())
    generator = torch.Generator().manual_seed(10_000 + seed)
    inputs = torch.randn(64, 100, N_INPUTS, generator=generator)
    h = 0.5 * torch.randn(64, model.n_states, generator=generator)
    states = []
    with torch.no_grad():
        for t in range(inputs.shape[1]):
            h = model.step(h, inputs[:, t])
            states.append(h)
    trajectories = torch.stack(states, 1).numpy()
    return Network(family, seed, model, sample_states(trajectories, N_SAMPLES, rng=seed))


def trained_network(family: str, seed: int, train_steps: int) -> Network:
    """A flip-flop network trained from ``seed``; states from task trials plus noise 0.5."""
    cell = family.removeprefix("flipflop-")
    network = train_network(cell, seed=seed, config=TrainingConfig(n_steps=train_steps))
    step = step_module(network)
    model = as_step_model(step)
    inputs, _ = FlipFlopTask().sample(128, torch.Generator().manual_seed(11 + seed))
    with torch.no_grad():
        trajectories = run_steps(step, inputs, torch.zeros(128, model.n_states)).numpy()
    states = sample_states(trajectories, N_SAMPLES, noise_scale=0.5, rng=seed)
    return Network(family, seed, model, states)


def networks(families: list[str], d: int, seeds: int, train_steps: int) -> Iterator[Network]:
    for family in families:
        for seed in range(seeds):
            if family in TRAINED_FAMILIES:
                yield trained_network(family, seed, train_steps)
            else:
                yield random_network(family, d, seed)


def solve_both(network: Network, repeats: int) -> Outcome:
    """Best wall time of each method over ``repeats`` alternating calls, and the last call's points."""
    walls: dict[str, list[float]] = {method: [] for method in METHODS}
    roots: dict[str, FixedPoints] = {}
    for _ in range(repeats):
        for method in METHODS:
            started = time.perf_counter()
            roots[method] = find_fixed_points(network.model, network.initial_states, method=method, device="cpu")
            walls[method].append(time.perf_counter() - started)
    return Outcome(network, {method: min(times) for method, times in walls.items()}, roots)


def summarise(outcomes: list[Outcome], label: str) -> list[str]:
    """One line per family: min and median ratio over ``outcomes``, and roots auto missed."""
    lines = []
    for family in dict.fromkeys(o.network.family for o in outcomes):
        members = [o for o in outcomes if o.network.family == family]
        ratios = [o.ratio for o in members]
        missed = sum(o.missed_by_auto() for o in members)
        lines.append(
            f"| {label} | {family} | {len(members)} | {min(ratios):.1f} | {statistics.median(ratios):.1f} | {missed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--families",
        nargs="+",
        default=[*RANDOM_FAMILIES, *TRAINED_FAMILIES],
        choices=[*RANDOM_FAMILIES, *TRAINED_FAMILIES],
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=[64], help="d of the random families")
    parser.add_argument("--seeds", type=int, default=6, help="networks per family (half tuning, half held out)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=TrainingConfig().n_steps)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    print("| family | d | seed | auto s | adam s | adam / auto | roots auto / adam (isolated) | adam's missed |")
    print("|---|---|---|---|---|---|---|---|")
    outcomes: list[Outcome] = []
    trained = [f for f in args.families if f in TRAINED_FAMILIES]
    random = [f for f in args.families if f not in TRAINED_FAMILIES]
    runs = [(d, random) for d in args.sizes] + ([(16, trained)] if trained else [])
    for d, families in runs:
        for network in networks(families, d, args.seeds, args.train_steps):
            outcome = solve_both(network, args.repeats)
            outcomes.append(outcome)
            n_roots = {m: len(_isolated(outcome.roots[m])) for m in METHODS}
            print(
                f"| {network.family} | {network.model.n_states} | {network.seed} "
                f"| {outcome.wall_s['auto']:.3f} | {outcome.wall_s['adam']:.3f} | {outcome.ratio:.1f} "
                f"| {n_roots['auto']} / {n_roots['adam']} | {outcome.missed_by_auto()} |",
                flush=True,
            )

    print("\n| seeds | family | networks | min adam / auto | median adam / auto | adam's roots auto missed |")
    print("|---|---|---|---|---|---|")
    for label, parity in (("tuning (even)", 0), ("held out (odd)", 1)):
        for line in summarise([o for o in outcomes if o.network.seed % 2 == parity], label):
            print(line)


if __name__ == "__main__":
    main()
