"""Large networks: adam, dense newton, newton_krylov and lm_krylov on tanh and GRU networks of growing size.

For d in {64, 256, 1024} (``--sizes``), n = 1024 initial states sampled from trajectories
driven by random inputs, zero input for the search: tanh networks h' = tanh(W h + B u)
with W ~ gain N(0, 1/d) for gain 0.9 (one stable root) and 1.5 (chaotic, many roots), and
an nn.GRU with PyTorch's default initialisation. Each run is a fresh process on one thread
(peak RSS is that process's, torch included) that first solves a 16-unit network of the same
kind, so the timed run pays no lazy imports (a worker warms up the same way; the first call
in a process spends ~3-4 s importing torch.func). Prints time, fraction converged, distinct
certified roots and peak memory per method, and the time ratios against adam.

Caps (on 2 shared cores the uncapped ladder takes hours): adam stops at ``--adam-iters``
(5000, the reference's default) for d <= 256 and at ``--adam-iters-large`` (300) from d = 1024;
dense lm stops at 30 iterations from d = 256, runs without completeness restarts (as the
matrix-free methods) and is run only below ``--dense-max`` (64; its n Jacobians alone are 4 GiB
per step at d = 1024). Capped runs are marked. From d = 1024 every method decomposes only the
10 least stable modes (n_eigs=10), so the analysis is the same for all.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/large_networks.py`` (about 15 minutes).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from typing import Any

import numpy as np

N_INPUTS = 4
N_SAMPLES = 1024
NETWORKS = ("tanh0.9", "tanh1.5", "gru")
METHODS = ("adam", "lm", "newton_krylov", "lm_krylov")


def make_network(kind: str, d: int, seed: int = 0):
    import torch

    class TanhRNN(torch.nn.Module):
        def __init__(self, gain: float) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.W = torch.nn.Parameter(gain * torch.randn(d, d, generator=generator) / d**0.5)
            self.B = torch.nn.Parameter(torch.randn(d, N_INPUTS, generator=generator) / N_INPUTS**0.5)

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T)

    if kind == "gru":
        torch.manual_seed(seed)
        return torch.nn.GRU(N_INPUTS, d, batch_first=True)
    return TanhRNN(float(kind.removeprefix("tanh")))


def initial_states(net, d: int, seed: int = 0, steps: int = 60, trials: int = 64) -> np.ndarray:
    """States sampled from trajectories driven by standard normal inputs."""
    import torch

    from workers.engine import sample_states

    rng = np.random.default_rng(seed)
    u = torch.tensor(rng.normal(size=(trials, steps, N_INPUTS)), dtype=torch.float32)
    with torch.no_grad():
        if isinstance(net, torch.nn.GRU):
            h0 = torch.tensor(0.5 * rng.normal(size=(1, trials, d)), dtype=torch.float32)
            trajectories, _ = net(u, h0)
        else:
            h = torch.tensor(rng.normal(size=(trials, d)), dtype=torch.float32)
            states = []
            for t in range(steps):
                h = net(u[:, t], h)
                states.append(h)
            trajectories = torch.stack(states, 1)
    return sample_states(trajectories.numpy(), N_SAMPLES, rng=rng)


def options_for(method: str, d: int, adam_iters: tuple[int, int]) -> dict[str, Any]:
    options: dict[str, Any] = {"method": method, "device": "cpu"}
    if method == "adam":
        options["max_iters"] = adam_iters[0] if d <= 256 else adam_iters[1]
    if method == "lm":
        options["completeness"] = "none"  # the same first pass as newton_krylov's; restarts are extra
        if d >= 256:
            options["max_iters"] = 30
    if d >= 1024:
        options["n_eigs"] = 10
    return options


def run_one(kind: str, d: int, method: str, adam_iters: tuple[int, int]) -> dict[str, Any]:
    """One search in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    from workers.engine import find_fixed_points

    warm_up = make_network(kind, 16)
    find_fixed_points(warm_up, initial_states(warm_up, 16)[:64], **options_for(method, 16, adam_iters))
    net = make_network(kind, d)
    x0 = initial_states(net, d)
    options = options_for(method, d, adam_iters)
    started = time.perf_counter()
    fps = find_fixed_points(net, x0, **options)
    seconds = time.perf_counter() - started
    info = fps.info
    return {
        "seconds": seconds,
        "converged": info["n_converged"] / info["n_samples"],
        "certified": int(fps.certified.sum()) if fps.certified is not None else 0,
        "capped": info["n_capped"] > 0,
        "iterations": info["iterations"],
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "xstar": fps.xstar[fps.certified.astype(bool)] if fps.certified is not None else fps.xstar,
    }


def same_roots(a: np.ndarray, b: np.ndarray, tol: float = 1e-3) -> bool:
    """Whether every root of ``b`` is among ``a`` (max-norm within ``tol``)."""
    return all(len(a) and np.abs(a - x).max(axis=1).min() <= tol for x in b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS))
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=METHODS, help="without adam the ratio columns stay empty"
    )
    parser.add_argument("--adam-iters", type=int, default=5000)
    parser.add_argument("--adam-iters-large", type=int, default=300, help="adam's cap from d = 1024")
    parser.add_argument("--dense-max", type=int, default=64, help="largest d dense lm runs at")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    print(
        "| network | d | method | time (s) | × adam | converged | certified roots | adam's roots found "
        "| peak RSS (MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in args.networks:
        for d in args.sizes:
            results: dict[str, dict[str, Any]] = {}
            for method in (m for m in METHODS if m in args.methods):  # adam first: the ratios need it
                if method == "lm" and d > args.dense_max:
                    print(f"| {kind} | {d} | lm | not run (--dense-max {args.dense_max}) | | | | | |")
                    continue
                with context.Pool(1) as pool:
                    results[method] = pool.apply(run_one, (kind, d, method, (args.adam_iters, args.adam_iters_large)))
                r, adam = results[method], results.get("adam")
                speedup = f"{adam['seconds'] / r['seconds']:.1f}" if adam else ""
                covered = "" if adam is None else "yes" if same_roots(r["xstar"], adam["xstar"]) else "no"
                capped = " (capped)" if r["capped"] else ""
                print(
                    f"| {kind} | {d} | {method} | {r['seconds']:.2f}{capped} | {speedup} | "
                    f"{r['converged']:.1%} | {r['certified']} | {covered} | {r['peak_mib']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
