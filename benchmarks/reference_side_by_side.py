"""fpf's engine side by side with the reference, FixedPointFinder (torch), on the 3-bit flip-flops.

The reference (Golub & Sussillo's FixedPointFinder, Apache-2.0) is not a dependency of fpf and
none of its code is in this tree: get it once, outside the tree, and pass its path::

    git clone https://github.com/mattgolub/fixed-point-finder /tmp/fixed-point-finder
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.reference_side_by_side \\
        --reference /tmp/fixed-point-finder [--repeats 5] [--cells tanh gru lstm]

Both run in this process on one torch thread. The networks are the shipped 16-unit flip-flops
(:mod:`benchmarks.flipflops`): the reference gets the same weights as torch's own nn.RNN / nn.GRU
(the LSTM behind nn.RNN's call signature on the packed state [h, c], the form it accepts) and
its example's settings (``max_iters=10000, lr_init=1, outlier_distance_scale=10``, its printing
sent to a buffer); fpf's engine gets its default options. Both get the same 1024 initial
states (a fresh copy each call: the reference overwrites a float32 array in place) and zero
input. Calls alternate between the two, ``--repeats`` times per network, after an untimed round;
the table shows the median wall time of each and, in brackets, the median CPU time of this
process (what other processes on a shared machine take from it left out), with their ratios,
and the roots each found. fpf's roots are its certified points (isolated, Newton step below
tol_unique / 10); the reference's are its unique points with q below its tol_q. Every fpf root is
matched to the nearest reference point.

Then ``--repeats`` more fpf calls per network run with explicit timers (CPU time) around the
engine's stages and operations, wrapped in this process only, and the median call shows where
the time goes, in milliseconds and in units of one batched Newton step on all initial states
(one forward pass, one batched Jacobian, one batched LU solve), timed on its own (best of 20).
It also counts the torch operations one fpf call dispatches and times the cheapest such operation
(an element-wise op on a 16 x 16 tensor): their product is what the run costs before any
arithmetic, a floor that fewer operations lower and faster kernels do not.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.flipflops import Case, flipflop_case, flipflop_step
from examples.flipflop.networks import CELLS, WEIGHT_NAMES, FlipFlopNetwork, cell_weights
from fpf_client.fixed_points import FixedPoints
from workers.engine import analysis, find_fixed_points, finder
from workers.engine.pipeline import info, selection
from workers.engine.solvers import Problem
from workers.engine.solvers.methods import anderson, lm
from workers.engine.solvers.strategies import completeness

#: The settings of the reference's torch flip-flop example (examples/torch/run_FlipFlop.py).
REFERENCE_SETTINGS: dict[str, Any] = {
    "max_iters": 10000,
    "lr_init": 1.0,
    "outlier_distance_scale": 10.0,
    "verbose": True,
    "super_verbose": True,
}
#: A fpf root and a reference point are the same root within this max-norm distance (both tools'
#: default tol_unique).
SAME_ROOT_TOL = 1e-3
#: The flip-flop's roots: 2^3 stable memories and 19 saddles between them.
EXPECTED_ROOTS, EXPECTED_STABLE = 27, 8
N_INPUTS = 3


class PackedLSTM(torch.nn.Module):
    """nn.LSTM behind nn.RNN's call ``output, h_n = rnn(inputs, h0)``, on the packed state [h, c]."""

    def __init__(self, lstm: torch.nn.LSTM) -> None:
        super().__init__()
        self.lstm = lstm
        self.batch_first = lstm.batch_first
        self.hidden_size = lstm.hidden_size

    def forward(self, inputs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state[..., : self.hidden_size].contiguous(), state[..., self.hidden_size :].contiguous()
        output, (h_n, c_n) = self.lstm(inputs, (h, c))
        return output, torch.cat([h_n, c_n], dim=-1)


def reference_rnn(cell: str) -> torch.nn.Module:
    """torch's batch-first recurrent layer for ``cell`` with the shipped network's weights."""
    layer = FlipFlopNetwork(cell).rnn  # type: ignore[arg-type]
    weights = cell_weights(flipflop_step(cell))  # type: ignore[arg-type]
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(layer, f"{name}_l0").copy_(weights[name])
    layer.requires_grad_(False)
    return PackedLSTM(layer) if cell == "lstm" else layer


def check_same_map(rnn: torch.nn.Module, case: Case) -> None:
    """The reference's network and fpf's model compute the same step (else the comparison is void)."""
    h = torch.as_tensor(case.initial_states[:64])
    u = torch.zeros(64, case.n_inputs)
    with torch.no_grad():
        _, ours = rnn(u.unsqueeze(1), h.unsqueeze(0))
        theirs = case.model.step(h, u)
    gap = float((ours.squeeze(0) - theirs).abs().max())
    if gap > 1e-5:
        raise SystemExit(f"{case.name}: the reference's network and fpf's model differ by {gap:g}")


def load_reference(path: Path) -> type:
    """FixedPointFinderTorch from a checkout of the reference (its modules import each other by name)."""
    if not (path / "FixedPointFinderTorch.py").is_file():
        raise SystemExit(f"{path} is not a checkout of mattgolub/fixed-point-finder (no FixedPointFinderTorch.py)")
    sys.path.insert(0, str(path))
    from FixedPointFinderTorch import FixedPointFinderTorch  # type: ignore[import-not-found]

    return FixedPointFinderTorch  # type: ignore[no-any-return]


@dataclass
class Roots:
    """The roots a tool reported: points (n, d) and which are stable."""

    xstar: np.ndarray
    is_stable: np.ndarray

    @property
    def n_stable(self) -> int:
        return int(self.is_stable.sum())


def reference_roots(unique: Any, tol_q: float) -> Roots:
    """The reference's unique points that meet its tol_q."""
    converged = np.asarray(unique.qstar) < tol_q
    return Roots(np.asarray(unique.xstar)[converged], np.asarray(unique.is_stable, dtype=bool)[converged])


def fpf_roots(points: FixedPoints) -> Roots:
    """fpf's certified roots."""
    certified = np.asarray(points.certified, dtype=bool)
    return Roots(points.xstar[certified], np.asarray(points.is_stable, dtype=bool)[certified])


def agreement(ours: Roots, theirs: Roots) -> tuple[int, float]:
    """How many of ``ours`` have a point of ``theirs`` within SAME_ROOT_TOL, and the largest such distance."""
    if not len(ours.xstar) or not len(theirs.xstar):
        return 0, float("nan")
    nearest = np.abs(ours.xstar[:, None, :] - theirs.xstar[None, :, :]).max(-1).min(1)
    matched = nearest <= SAME_ROOT_TOL
    return int(matched.sum()), float(nearest[matched].max()) if matched.any() else float("nan")


@dataclass
class SideBySide:
    """Both tools on one network over the interleaved calls: (wall, CPU) seconds of each call."""

    case: Case
    reference_s: list[tuple[float, float]] = field(default_factory=list)
    fpf_s: list[tuple[float, float]] = field(default_factory=list)
    reference: Roots | None = None
    reference_points: int = 0
    fpf: Roots | None = None

    def row(self) -> str:
        assert self.reference is not None and self.fpf is not None
        ref = [statistics.median(t[k] for t in self.reference_s) for k in (0, 1)]
        ours = [statistics.median(t[k] for t in self.fpf_s) for k in (0, 1)]
        matched, gap = agreement(self.fpf, self.reference)
        counts_match = (len(self.fpf.xstar), self.fpf.n_stable) == (len(self.reference.xstar), self.reference.n_stable)
        expected = (len(self.fpf.xstar), self.fpf.n_stable) == (EXPECTED_ROOTS, EXPECTED_STABLE)
        return (
            f"| {self.case.name} | {ref[0]:.3f} ({ref[1]:.3f}) | {ours[0]:.4f} ({ours[1]:.4f}) "
            f"| {ref[0] / ours[0]:.1f} ({ref[1] / ours[1]:.1f}) "
            f"| {len(self.reference.xstar)} ({self.reference.n_stable}) of {self.reference_points} "
            f"| {len(self.fpf.xstar)} ({self.fpf.n_stable}){'' if expected else ' !'} "
            f"| {matched} of {len(self.fpf.xstar)}, max {gap:.1e} | {'yes' if counts_match else 'no'} |"
        )


class Stopwatch:
    """Wall and CPU seconds of a block: CPU time leaves out what other processes on a shared machine
    took from this one (with one torch thread, both agree on an idle machine)."""

    def __enter__(self) -> Stopwatch:
        self.started = (time.perf_counter(), time.process_time())
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = (time.perf_counter() - self.started[0], time.process_time() - self.started[1])


def run_reference(finder_class: type, rnn: torch.nn.Module, states: np.ndarray, **settings: Any) -> tuple[Any, Any]:
    """The reference's unique points (and the finder) from a fresh copy of ``states``, its printing discarded."""
    reference = finder_class(rnn, **{**REFERENCE_SETTINGS, **settings})
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its scheduler converts a tensor that requires grad, every iteration
        unique, _ = reference.find_fixed_points(states.copy(), np.zeros((1, N_INPUTS)))
    return unique, reference


def side_by_side(finder_class: type, case: Case, cell: str, repeats: int) -> SideBySide:
    """``repeats`` rounds of one reference call and one fpf call on ``case``, after one untimed
    round (the reference stopped after a few iterations) that does both tools' lazy set-up."""
    rnn = reference_rnn(cell)
    check_same_map(rnn, case)
    inputs = np.zeros((1, case.n_inputs), dtype=np.float32)
    run_reference(finder_class, rnn, case.initial_states, max_iters=10)
    find_fixed_points(case.model, case.initial_states, inputs)
    outcome = SideBySide(case)
    for _ in range(repeats):
        with Stopwatch() as reference_clock:
            unique, reference = run_reference(finder_class, rnn, case.initial_states)
        with Stopwatch() as fpf_clock:
            points = find_fixed_points(case.model, case.initial_states, inputs)
        outcome.reference_s.append(reference_clock.seconds)
        outcome.fpf_s.append(fpf_clock.seconds)
        outcome.reference = reference_roots(unique, reference.tol_q)
        outcome.reference_points = unique.n
        outcome.fpf = fpf_roots(points)
    return outcome


# --- where fpf's time goes ----------------------------------------------------------------------

#: Stages of find_fixed_points (the pipeline's functions as the finder module calls them), and the
#: operations inside them; the other stages (input checks, uniqueness, the info record) are the rest.
STAGES = {
    "solve": "first pass (Anderson mixing)",
    "complete": "restarts, with the first pass's LM",
    "refine": "float64 refinement",
    "polish": "polish (one Newton step per root)",
    "screen": "outliers (distance, q reruns)",
    "analyse": "analysis (Jacobians, eigendecomposition, results)",
}
OPERATIONS: list[tuple[object, str, str]] = [
    (Problem, "residual", "forward"),
    (Problem, "jacobian", "Jacobians"),
    (lm, "_lm_step", "solves"),
    (anderson, "_mixing_coefficients", "solves"),
    (analysis, "decompose", "eigen"),
    (completeness, "_eigen_classes", "eigen"),
    (completeness, "_certified", "eigen"),
    (selection, "unique_indices", "uniqueness"),
    (completeness, "unique_indices", "uniqueness"),
    (info, "discovery_curve", "uniqueness"),
]
COLUMNS = ("forward", "Jacobians", "solves", "eigen", "uniqueness", "other")
REST = "the rest (checks, uniqueness, discovery curve)"


class StageClock:
    """Exclusive CPU time per (stage, operation), from wrappers around the engine's functions."""

    def __init__(self, model: object) -> None:
        self.model = model
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: dict[tuple[str, str], int] = defaultdict(int)
        self.key = (REST, "other")
        self.stack: list[tuple[str, str]] = []
        self.mark = time.process_time()

    def wrap(self, fn: Callable[..., Any], label: str, *, stage: bool) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._switch((label, "other") if stage else (self.key[0], label))
            try:
                return fn(*args, **kwargs)
            finally:
                self._switch(None)

        return timed

    def _switch(self, key: tuple[str, str] | None) -> None:
        now = time.process_time()
        self.seconds[self.key] += now - self.mark
        self.mark = now
        if key is None:
            self.key = self.stack.pop()
        else:
            if key != self.key:  # a model's Jacobian inside Problem.jacobian is one call
                self.calls[key] += 1
            self.stack.append(self.key)
            self.key = key

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap the stages and operations for the duration of the block."""
        saved: list[tuple[object, str, Any]] = []
        targets = [(finder, name, label, True) for name, label in STAGES.items()]
        targets += [(owner, name, label, False) for owner, name, label in OPERATIONS]
        targets += [(type(self.model), name, "Jacobians", False) for name in ("jacobian_states", "jacobians")]
        for owner, name, label, stage in targets:
            if not hasattr(owner, name):
                raise SystemExit(f"cannot time {label}: {owner} has no {name} any more; update STAGES/OPERATIONS")
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, self.wrap(getattr(owner, name), label, stage=stage))
        try:
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)


def newton_step_seconds(case: Case, repeats: int = 20) -> float:
    """Best time of one batched Newton step from all initial states: forward, Jacobian, LU solve."""
    problem = Problem(case.model, torch.zeros(1, case.n_inputs))
    x = torch.as_tensor(case.initial_states)
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        g = problem.residual(x)
        torch.linalg.solve(problem.jacobian(x), -g)
        best = min(best, time.process_time() - started)
    return best


class _OperationCounter(TorchDispatchMode):
    """Counts the operations torch's dispatcher runs (reads of a tensor's shape or strides run none)."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.operations += 1
        return func(*args, **(kwargs or {}))


def torch_operations(case: Case) -> int:
    """Torch operations one fpf call dispatches (each operation of a TorchScript forward counts)."""
    with _OperationCounter() as counter:
        find_fixed_points(case.model, case.initial_states, np.zeros((1, case.n_inputs), dtype=np.float32))
    return counter.operations


def operation_seconds(repeats: int = 200) -> float:
    """Best CPU time of one element-wise torch operation on a small (16, 16) tensor: what an
    operation costs before it does any arithmetic to speak of."""
    x = torch.ones(16, 16)
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        torch.add(x, x)
        best = min(best, time.process_time() - started)
    return best


def breakdown(case: Case, repeats: int) -> list[str]:
    """Where one fpf call's time goes (the call with the median total of ``repeats`` timed ones)."""
    inputs = np.zeros((1, case.n_inputs), dtype=np.float32)
    clocks = []
    for _ in range(repeats):
        clock = StageClock(case.model)
        with clock.installed():
            started = time.process_time()
            find_fixed_points(case.model, case.initial_states, inputs)
            total = time.process_time() - started
        clock.seconds[(REST, "other")] += total - sum(clock.seconds.values())
        clocks.append((total, clock))
    total, clock = sorted(clocks, key=lambda pair: pair[0])[len(clocks) // 2]
    step = newton_step_seconds(case)
    operations, per_operation = torch_operations(case), operation_seconds()
    lines = [
        f"\n{case.name}: {1e3 * total:.1f} ms = {total / step:.1f} batched Newton steps "
        f"(one step on all {len(case.initial_states)} states: {1e3 * step:.2f} ms); {operations} torch "
        f"operations, at >= {1e6 * per_operation:.1f} us each >= {1e3 * operations * per_operation:.1f} ms",
        "| stage | " + " | ".join(f"{c} ms" for c in COLUMNS) + " | total ms | Newton steps | calls (fwd / Jac) |",
        "|" + "---|" * (len(COLUMNS) + 4),
    ]
    by_column: dict[str, float] = defaultdict(float)
    for stage in [*STAGES.values(), REST]:
        cells = [clock.seconds.get((stage, column), 0.0) for column in COLUMNS]
        for column, seconds in zip(COLUMNS, cells, strict=True):
            by_column[column] += seconds
        calls = f"{clock.calls.get((stage, 'forward'), 0)} / {clock.calls.get((stage, 'Jacobians'), 0)}"
        lines.append(
            f"| {stage} | " + " | ".join(f"{1e3 * s:.1f}" for s in cells) + f" | {1e3 * sum(cells):.1f} "
            f"| {sum(cells) / step:.1f} | {calls} |"
        )
    lines.append(
        "| all | " + " | ".join(f"{1e3 * by_column[c]:.1f}" for c in COLUMNS) + f" | {1e3 * total:.1f} "
        f"| {total / step:.1f} | |"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", type=Path, required=True, help="checkout of mattgolub/fixed-point-finder")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved calls of each tool per network")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    finder_class = load_reference(args.reference.resolve())
    cases = {cell: flipflop_case(cell) for cell in args.cells}
    print(
        f"# torch {torch.__version__}, 1 thread, {len(next(iter(cases.values())).initial_states)} initial states, "
        f"zero input, {args.repeats} interleaved calls each; load average {os.getloadavg()[0]:.2f} at the start"
    )
    print(
        "| network | reference s, wall (CPU) | fpf s, wall (CPU) | reference / fpf, wall (CPU) | reference roots "
        "(stable) of unique points | fpf roots (stable) | fpf roots matched by the reference | counts agree |"
    )
    print("|" + "---|" * 8)
    for cell, case in cases.items():
        print(side_by_side(finder_class, case, cell, args.repeats).row(), flush=True)
    for case in cases.values():
        print("\n".join(breakdown(case, args.repeats)), flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
