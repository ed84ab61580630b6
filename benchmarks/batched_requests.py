"""Batched requests: many small searches on one model as one solver pass, against one call each.

``--requests`` searches of ``--states`` initial states each, every one with its own input row,
on a small tanh RNN: ``find_fixed_points`` once per request (the baseline) and
``find_fixed_points_batch`` over all of them, alternately ``--repeats`` times in this process, so
load from elsewhere falls on both sides. Prints the median times and their ratio, per method and
with the completeness restarts on and off (the restarts run per request in both). The results are
checked to be the same points.

Run: ``.venv/bin/python -m benchmarks.batched_requests [--requests 32] [--states 16] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from workers.engine import SearchRequest, StepModel, as_step_model, find_fixed_points, find_fixed_points_batch

N_STATES, N_INPUTS = 8, 2


def model() -> StepModel:
    """An 8-unit tanh RNN: ``forward(u, h) -> tanh(W h + B u + b)``."""
    generator = torch.Generator().manual_seed(3)
    W = 1.2 * torch.randn(N_STATES, N_STATES, generator=generator) / N_STATES**0.5
    B = torch.randn(N_STATES, N_INPUTS, generator=generator)
    b = 0.1 * torch.randn(N_STATES, generator=generator)

    def forward(u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ W.T + u @ B.T + b)

    return as_step_model(forward, n_states=N_STATES, n_inputs=N_INPUTS)


def requests(n_requests: int, n_states: int) -> list[SearchRequest]:
    rng = np.random.default_rng(0)
    return [
        SearchRequest(
            rng.uniform(-1, 1, size=(n_states, N_STATES)).astype(np.float32),
            rng.standard_normal((1, N_INPUTS)).astype(np.float32) * 0.5,
        )
        for _ in range(n_requests)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--states", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rnn, batch = model(), requests(args.requests, args.states)
    print(f"{args.requests} requests x {args.states} initial states, {N_STATES} states, cpu, 1 thread")
    print(f"{'method':<14} {'completeness':<13} {'separate s':>10} {'batch s':>10} {'ratio':>7}")
    for method in ("lm", "newton_krylov", "anderson"):
        for completeness in ("none", "midpoints"):
            options = {"method": method, "completeness": completeness, "device": "cpu"}
            separate, together = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                alone = [find_fixed_points(rnn, r.initial_states, r.inputs, **options) for r in batch]
                separate.append(time.perf_counter() - started)
                started = time.perf_counter()
                batched = find_fixed_points_batch(rnn, batch, **options)
                together.append(time.perf_counter() - started)
            assert [f.n for f in batched] == [f.n for f in alone]
            assert all(np.allclose(b.xstar, a.xstar, atol=1e-5) for b, a in zip(batched, alone, strict=True))
            base, fast = statistics.median(separate), statistics.median(together)
            print(f"{method:<14} {completeness:<13} {base:>10.3f} {fast:>10.3f} {base / fast:>6.2f}x")


if __name__ == "__main__":
    main()
