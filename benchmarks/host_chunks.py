"""Host chunks: many initial states on the CPU in chunks of the default size, against one chunk.

For each case (a tanh network h' = tanh(W h) with W ~ 0.9 N(0, 1/d), one stable root, and a
method), ``find_fixed_points`` runs on ``--n`` initial states sampled from random trajectories,
once with ``batch_size=None`` (chunks sized by ``auto_chunk_size``: on the host about
``HOST_CHUNK_BYTES`` of working set) and once with ``batch_size=n`` (one chunk: what free memory
alone would allow here), alternately ``--repeats`` times in this process, on one thread. Prints
the median times, their ratio and the chunk size; the two runs must find the same points.

Run: ``.venv/bin/python -m benchmarks.host_chunks [--n 20000] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from workers.engine import as_step_model, find_fixed_points, sample_states
from workers.engine.pipeline.chunking import auto_chunk_size

#: (d, method): a dense solver, the matrix-free ones and the mixing warm start.
CASES = ((16, "lm"), (64, "lm"), (64, "lm_krylov"), (64, "newton_krylov"), (64, "anderson"), (256, "anderson"))


def tanh_network(d: int):
    """A d-unit tanh RNN without inputs' effect, gain 0.9: one stable root at 0."""
    W = 0.9 * torch.randn(d, d, generator=torch.Generator().manual_seed(0)) / d**0.5
    return as_step_model(lambda u, h: torch.tanh(h @ W.T), n_states=d, n_inputs=1)


def timed(model, x0: np.ndarray, method: str, batch_size: int | None) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    fps = find_fixed_points(model, x0, np.zeros((1, 1)), method=method, batch_size=batch_size, completeness="none")
    return time.perf_counter() - started, fps.xstar


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.n} initial states, cpu, 1 thread, median of {args.repeats}")
    print(f"{'d':>4} {'method':<14} {'chunk':>6} {'one chunk s':>11} {'chunked s':>10} {'ratio':>6}")
    for d, method in CASES:
        model = tanh_network(d)
        trajectories = np.random.default_rng(0).uniform(-0.5, 0.5, (100, 50, d))
        x0 = sample_states(trajectories, args.n, noise_scale=0.1, rng=0)
        timed(model, x0[:64], method, None)  # lazy imports and first-call costs out of the timings
        whole, chunked = [], []
        for _ in range(args.repeats):
            whole_s, whole_x = timed(model, x0, method, args.n)
            chunked_s, chunked_x = timed(model, x0, method, None)
            assert whole_x.shape == chunked_x.shape and np.allclose(whole_x, chunked_x, atol=1e-5)
            whole.append(whole_s)
            chunked.append(chunked_s)
        chunk = min(args.n, auto_chunk_size(d, 1, torch.float32, torch.device("cpu"), method))
        one, many = statistics.median(whole), statistics.median(chunked)
        print(f"{d:>4} {method:<14} {chunk:>6} {one:>11.2f} {many:>10.2f} {one / many:>5.2f}x")


if __name__ == "__main__":
    main()
