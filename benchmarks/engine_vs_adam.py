"""Newton vs the reference's Adam on the engine, in one process with the same thread settings.

Cases: the shipped 3-bit flip-flop networks (tanh RNN, GRU, LSTM; 16 units; 1024 states from
trajectories plus noise 0.5; zero input) and random networks (tanh with recurrent gain 0.9,
GRU with PyTorch's default init) at d = 64 and 256 (d = 1024 with ``--large``), 1024 states
sampled from input-driven trajectories. For each case and method it prints wall time, solver
iterations, the fraction of samples converged, the unique fixed points found (isolated ones,
and those flagged non-isolated: an eigenvalue at 1, as where GRU gates saturate), the points only
one method found (matched within tol_unique, max-norm), and peak resident memory. Each model is
adapted once (``load_model`` / ``as_step_model``, as a user or the worker's model cache does) and
both methods receive that same StepModel, so neither pays the adaptation's copy and dry run per call.

Times are the best of several calls run back to back, the methods taking turns. Peak memory
comes from one more call per method and is resource-based: the kernel's peak RSS (VmHWM) is
reset through /proc/self/clear_refs before that call (after malloc_trim returns freed heap to
the OS) and read after it; the figure is that peak minus the RSS before the call, so it counts
torch's allocations, which tracemalloc does not see. Linux and glibc only.

Run from the repository root: ``OMP_NUM_THREADS=1 python -m benchmarks.engine_vs_adam [--threads 1]
[--repeats 3] [--large] [--only flipflop|random]``.
"""

from __future__ import annotations

import argparse
import ctypes
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.flipflops import Case, flipflop_cases
from examples.flipflop.networks import run_steps
from fpf_client.fixed_points import FixedPoints
from workers.engine import as_step_model, find_fixed_points, sample_states

N_SAMPLES = 1024
RANDOM_INPUTS = 3
_LIBC = ctypes.CDLL("libc.so.6")


@dataclass
class Run:
    """One method on one case."""

    fps: FixedPoints
    wall_s: float
    peak_mb: float


def random_network(kind: str, d: int, seed: int) -> torch.nn.Module:
    """A random step map: tanh RNN cell with W_hh ~ N(0, 0.9^2 / d), or a default-init GRU cell."""
    torch.manual_seed(seed)
    if kind == "gru":
        cell: torch.nn.Module = torch.nn.GRUCell(RANDOM_INPUTS, d)
    else:
        cell = torch.nn.RNNCell(RANDOM_INPUTS, d)
        with torch.no_grad():
            cell.weight_hh.copy_(0.9 * torch.randn(d, d) / np.sqrt(d))
    return torch.jit.script(cell.requires_grad_(False).eval())


def random_cases(sizes: list[int]) -> Iterator[Case]:
    """Random networks; states from 64 trajectories of 100 steps driven by N(0, 1) inputs."""
    for kind in ("tanh", "gru"):
        for d in sizes:
            step = random_network(kind, d, seed=d)
            generator = torch.Generator().manual_seed(d)
            inputs = torch.randn(64, 100, RANDOM_INPUTS, generator=generator)
            with torch.no_grad():
                trajectories = run_steps(step, inputs, 0.5 * torch.randn(64, d, generator=generator)).numpy()
            yield Case(
                f"random {kind} d={d}",
                as_step_model(step),
                sample_states(trajectories, N_SAMPLES, rng=0),
                RANDOM_INPUTS,
            )


#: The runs compared on each case: name -> FinderOptions overrides. "auto, 1 pass" is the default
#: without the midpoint restarts that look for roots the first pass missed: what they cost.
METHODS: dict[str, dict[str, object]] = {
    "auto": {"method": "auto"},
    "auto, 1 pass": {"method": "auto", "completeness": "none"},
    "adam": {"method": "adam"},
}


def measure(solves: dict[str, Callable[[], FixedPoints]], repeats: int) -> dict[str, Run]:
    """Per solve, the best wall time of ``repeats`` calls and the peak RSS of one more call.

    Timed calls run back to back, as jobs do in a warm worker, and the solves take turns within
    each round, so load from other processes on a shared machine falls on every method alike; the
    best of several rounds filters it out. The memory call comes after freed heap is returned to
    the OS (which costs the next call page faults: Newton ~1.3 ms on the tanh flip-flop), so it
    does not reuse its predecessor's heap.
    """
    walls: dict[str, list[float]] = {name: [] for name in solves}
    for _ in range(repeats):
        for name, solve in solves.items():
            started = time.perf_counter()
            solve()
            walls[name].append(time.perf_counter() - started)
    runs = {}
    for name, solve in solves.items():
        _LIBC.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        found = solve()
        runs[name] = Run(found, min(walls[name]), (_status_kb("VmHWM") - before) / 1024)
    return runs


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def only_in(a: FixedPoints, b: FixedPoints, tol: float) -> FixedPoints:
    """The points of ``a`` with no point of ``b`` within ``tol`` (max-norm)."""
    if b.n == 0 or a.n == 0:
        return a
    distance = np.abs(a.xstar[:, None, :] - b.xstar[None, :, :]).max(-1)
    return a[distance.min(1) > tol]


def describe(points: FixedPoints) -> str:
    """Count, isolated count and saddle indices of a few isolated points."""
    isolated = points[~points.is_nonisolated] if points.n else points
    text = f"{points.n}"
    if points.n != isolated.n:
        text += f" ({isolated.n} isolated)"
    if isolated.n:
        text += " index " + ",".join(str(int(i)) for i in isolated.n_unstable[:8]) + ("..." if isolated.n > 8 else "")
    return text


def compare(case: Case, repeats: int) -> list[str]:
    """Table rows for ``case``: one per entry of :data:`METHODS`."""
    inputs = np.zeros((1, case.n_inputs), dtype=np.float32)
    runs = measure(
        {
            name: lambda overrides=overrides: find_fixed_points(case.model, case.initial_states, inputs, **overrides)
            for name, overrides in METHODS.items()
        },
        repeats,
    )
    auto, adam = runs["auto"], runs["adam"]
    tol = auto.fps.tol_unique
    rows = []
    for name, run in runs.items():
        info, fps = run.fps.info, run.fps
        isolated = fps[~fps.is_nonisolated] if fps.n else fps
        other = adam if name != "adam" else auto
        cells = [
            case.name,
            name,
            f"{run.wall_s:.3f}",
            f"{adam.wall_s / run.wall_s:.1f}",
            str(info["iterations"]),
            f"{info['n_converged'] / info['n_samples']:.3f}",
            f"{isolated.n} ({int(isolated.is_stable.sum()) if isolated.n else 0} stable)",
            str(fps.n - isolated.n),
            f"{run.peak_mb:.0f}",
            describe(only_in(fps, other.fps, tol)) if name != "adam" else describe(only_in(adam.fps, auto.fps, tol)),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def warm_up() -> None:
    """One small solve per method, so lazy initialisation is not timed."""
    step = random_network("tanh", 8, seed=0)
    states = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    for method in ("auto", "adam"):
        find_fixed_points(step, states, np.zeros((1, RANDOM_INPUTS), np.float32), method=method, max_iters=50)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads, for both methods")
    parser.add_argument("--large", action="store_true", help="add random networks with d = 1024")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the best time is kept")
    parser.add_argument("--only", choices=("flipflop", "random"), help="run one group of cases")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = [64, 256] + ([1024] if args.large else [])
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s), "
        f"torch {torch.__version__}, n = {N_SAMPLES}, zero input, default FinderOptions except method, "
        f"best of {args.repeats}"
    )
    print(
        "| case | method | wall s | adam s / this | iterations | converged | isolated points | non-isolated "
        "| peak MB | not found by the other (adam vs auto) |"
    )
    print("|" + "---|" * 10)
    warm_up()
    groups = {"flipflop": flipflop_cases, "random": lambda: random_cases(sizes)}
    for name, cases in groups.items():
        if args.only in (None, name):
            for case in cases():
                print("\n".join(compare(case, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
