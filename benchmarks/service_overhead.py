"""Service overhead: what a small job costs end to end beyond the engine's own time.

Starts a gateway and one warm worker (the integration-test harness, against the Redis at
127.0.0.1:6379; models run in the bubblewrap sandbox, as in production) with a queued-jobs quota
that admits the whole burst, unless ``--url`` names a running service (whose
``FPF_QUOTA_QUEUED_JOBS`` must then admit ``--burst`` jobs), then measures

* overhead = client-measured end-to-end time (POST until the ``end`` event) minus the
  engine time the worker recorded, for ``--jobs`` small jobs one after another (p50, p95);
* throughput of ``--burst`` small jobs submitted at once, against the same jobs run
  back to back in this process (the ratio is what the service keeps of the engine's rate).

Run: ``.venv/bin/python benchmarks/service_overhead.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
N_STATES, N_INPUTS, N_INITIAL = 8, 2, 16
OPTIONS = {"method": "newton", "random_seed": 0}


def small_model(path: Path) -> Path:
    """An 8-unit tanh RNN as TorchScript: ``forward(u, h) -> tanh(W h + B u + b)``."""
    import torch

    class TanhRNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(3)
            self.W = torch.nn.Parameter(1.2 * torch.randn(N_STATES, N_STATES, generator=generator) / N_STATES**0.5)
            self.B = torch.nn.Parameter(torch.randn(N_STATES, N_INPUTS, generator=generator))
            self.b = torch.nn.Parameter(0.1 * torch.randn(N_STATES, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T + self.b)

    torch.jit.script(TanhRNN()).save(str(path))
    return path


def states(seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(N_INITIAL, N_STATES)).round(6).tolist()


def run_one(http: httpx.Client, model_id: str, seed: int) -> tuple[float, dict[str, Any]]:
    """Submit one job and follow its event stream to the end; (end-to-end seconds, final job)."""
    started = time.perf_counter()
    job = http.post("/v1/jobs", json={"model_id": model_id, "initial_states": states(seed), "options": OPTIONS})
    job.raise_for_status()
    with http.stream("GET", f"/v1/jobs/{job.json()['id']}/events") as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "end":
                return time.perf_counter() - started, json.loads(line[6:])
    raise RuntimeError("the event stream ended without an end event")


def burst(http: httpx.Client, model_id: str, n_jobs: int) -> float:
    """Submit ``n_jobs`` at once (32 client threads); seconds until the last one finished."""
    started = time.perf_counter()
    def submit(seed: int) -> str:
        response = http.post("/v1/jobs", json={"model_id": model_id, "initial_states": states(seed), "options": OPTIONS})
        response.raise_for_status()  # a 429 here: the service's queued-jobs quota is below the burst
        return response.json()["id"]

    with ThreadPoolExecutor(32) as pool:
        ids = list(pool.map(submit, range(1000, 1000 + n_jobs)))
    pending = set(ids)
    while pending:
        done = {j["id"] for j in http.get("/v1/jobs", params={"status": "succeeded", "limit": 1000}).json()}
        pending -= done
        time.sleep(0.02)
    return time.perf_counter() - started


def in_process(model_path: Path, n_jobs: int) -> tuple[float, float]:
    """(median seconds per job, total seconds for n_jobs) of the engine alone, in this process."""
    import torch

    from workers.engine import find_fixed_points, load_model

    torch.set_num_threads(1)
    model = load_model(model_path)
    find_fixed_points(model, np.asarray(states(0)), None, **OPTIONS)
    times = []
    started = time.perf_counter()
    for seed in range(1000, 1000 + n_jobs):
        t = time.perf_counter()
        find_fixed_points(model, np.asarray(states(seed)), None, **OPTIONS)
        times.append(time.perf_counter() - t)
    return statistics.median(times), time.perf_counter() - started


def measure(url: str, model_path: Path, n_jobs: int, n_burst: int) -> None:
    with httpx.Client(base_url=url, timeout=120) as http:
        with open(model_path, "rb") as f:
            model_id = http.post("/v1/models", files={"file": ("bench.pt", f)}).json()["id"]
        while http.get(f"/v1/models/{model_id}").json()["status"] == "validating":
            time.sleep(0.05)
        for seed in range(5):  # warm the worker: model cache, first-call paths
            run_one(http, model_id, seed)
        overheads, engines, server_side = [], [], []
        for seed in range(n_jobs):
            end_to_end, job = run_one(http, model_id, seed)
            engine = job["timings"]["engine_s"]
            overheads.append(end_to_end - engine)
            engines.append(engine)
            server_side.append(job["timings"]["total_s"] - engine)
        burst_s = burst(http, model_id, n_burst)

    engine_job_s, engine_burst_s = in_process(model_path, n_burst)
    p50, p95 = np.percentile(overheads, [50, 95])
    print(f"small job: tanh RNN d={N_STATES}, {N_INITIAL} initial states, {OPTIONS}")
    print(f"engine time per job (worker): median {statistics.median(engines) * 1e3:.1f} ms; "
          f"in this process: {engine_job_s * 1e3:.1f} ms")
    print(f"overhead over {n_jobs} sequential jobs (end to end - engine): p50 {p50 * 1e3:.1f} ms, "
          f"p95 {p95 * 1e3:.1f} ms (target p50 < 30 ms: {'met' if p50 < 0.030 else 'NOT met'})")
    print(f"  of which inside the service (submitted -> finished - engine): "
          f"p50 {np.percentile(server_side, 50) * 1e3:.1f} ms, p95 {np.percentile(server_side, 95) * 1e3:.1f} ms")
    slowdown = statistics.median(e + o for e, o in zip(engines, overheads)) / statistics.median(engines)
    print(f"  end to end / engine, median: {slowdown:.2f}x")
    print(f"burst of {n_burst} jobs submitted at once: {burst_s:.2f} s, {n_burst / burst_s:.1f} jobs/s; "
          f"same jobs back to back in-process: {engine_burst_s:.2f} s, {n_burst / engine_burst_s:.1f} jobs/s; "
          f"service/in-process throughput ratio {engine_burst_s / burst_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; default: start one (gateway + 1 worker)")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    with tempfile.TemporaryDirectory(prefix="fpf-bench-") as tmp:
        model_path = small_model(Path(tmp) / "bench.pt")
        if args.url:
            measure(args.url, model_path, args.jobs, args.burst)
            return
        sys.path.insert(0, str(REPO / "tests" / "support"))
        from service_harness import start_service  # the integration-test harness

        with start_service(Path(tmp), FPF_QUOTA_QUEUED_JOBS=str(args.burst)) as service:
            measure(service.url, model_path, args.jobs, args.burst)


if __name__ == "__main__":
    main()
