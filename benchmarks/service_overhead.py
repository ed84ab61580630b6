"""Service overhead: what a small job costs through the service beyond the engine's own time.

Starts a gateway, a gRPC server and ``--workers`` warm Celery workers (the test harness, against
the Redis at 127.0.0.1:6379; models run in the bubblewrap sandbox, as in production) with a
queued-jobs quota that admits the whole burst, then, for each transport (REST and gRPC) through
the Python client, measures

* latency: ``--jobs`` small jobs one after another, client -> result in hand (submit, wait, fetch
  the result), against the same call of the engine in this process: the overhead is the
  difference (p50, p95), and the worker's recorded engine time is set beside the in-process one;
* throughput: ``--burst`` small jobs from 8 client threads, each submitting and waiting, against
  the same jobs run back to back in this process (the ratio is what the service keeps of the
  engine's rate on the same cores);
* dynamic batching: ``--queue-burst`` small jobs on one model and spread over four models, with
  batching on (``FPF_BATCH_MAX_JOBS`` at its default) and off (``FPF_BATCH_MAX_JOBS=1``), each
  beside the same calls run back to back in this process, with the engine calls the service made
  (distinct batches, from the job records). Twice: as a burst (submitted at once by 8 client
  threads, then every result fetched), and as a backlog (queued while a blocker job holds each
  worker, timed from the blockers' end to the last result in hand: the workers' own rate).

Every in-process figure comes from the same run, so load from elsewhere falls on both sides; the
load average is printed beside each table.

Run: ``.venv/bin/python -m benchmarks.service_overhead [--workers 1 4] [--jobs 100] [--burst 200]
[--queue-burst 200]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from fpf_client import Client, Job
from fpf_client.records import JobRecord

REPO = Path(__file__).resolve().parents[1]
N_STATES, N_INPUTS, N_INITIAL = 8, 2, 16
OPTIONS = {"method": "auto", "random_seed": 0}
CLIENT_THREADS = 8
#: A job that runs until it is cancelled (adam cannot meet tol_q; adam is never batched): it holds a worker.
BLOCKER_OPTIONS = {"method": "adam", "lr_init": 0.01, "max_iters": 1_000_000, "tol_q": 1e-30, "tol_dq": 0}


def small_model(path: Path, seed: int = 3) -> Path:
    """An 8-unit tanh RNN as TorchScript: ``forward(u, h) -> tanh(W h + B u + b)``, weights drawn with ``seed``."""
    import torch

    class TanhRNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.W = torch.nn.Parameter(1.2 * torch.randn(N_STATES, N_STATES, generator=generator) / N_STATES**0.5)
            self.B = torch.nn.Parameter(torch.randn(N_STATES, N_INPUTS, generator=generator))
            self.b = torch.nn.Parameter(0.1 * torch.randn(N_STATES, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T + self.b)

    torch.jit.script(TanhRNN()).save(str(path))
    return path


def states(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(N_INITIAL, N_STATES))


class InProcess:
    """The engine on the same model in this process, one thread, as a warm worker runs it."""

    def __init__(self, model_path: Path) -> None:
        import torch

        from workers.engine import find_fixed_points, load_model

        torch.set_num_threads(1)
        self._find = find_fixed_points
        self.model = load_model(model_path)
        self.solve(0)

    def solve(self, seed: int) -> float:
        started = time.perf_counter()
        self._find(self.model, states(seed), None, **OPTIONS)
        return time.perf_counter() - started


def load_average() -> str:
    return "load average " + " ".join(f"{load:.1f}" for load in os.getloadavg())


def one_job(client: Client, model_id: str, seed: int) -> tuple[float, float]:
    """Submit, wait and fetch the result: (client seconds, the worker's engine seconds)."""
    started = time.perf_counter()
    job = client.submit(model_id, states(seed), **OPTIONS)
    record = job.wait(progress=False)
    job.result()
    return time.perf_counter() - started, record.timings.engine_s


def burst(connect: Callable[[], Client], model_id: str, n_jobs: int) -> float:
    """``n_jobs`` from CLIENT_THREADS threads, each submitting and waiting; seconds until the last result."""

    def run(seeds: range) -> None:
        with connect() as client:
            for seed in seeds:
                one_job(client, model_id, seed)

    chunks = [range(1000 + i, 1000 + n_jobs, CLIENT_THREADS) for i in range(CLIENT_THREADS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(run, chunks))
    return time.perf_counter() - started


def queue_burst(client_for: Callable[[], Client], model_ids: list[str], n_jobs: int) -> tuple[float, int]:
    """``n_jobs`` submitted at once by CLIENT_THREADS threads (job ``i`` on model ``i % len(model_ids)``),
    then every result fetched; (seconds until the last result, engine calls: distinct batches)."""

    def submit(seeds: range) -> list[tuple[Client, Job]]:
        client = client_for()
        return [(client, client.submit(model_ids[seed % len(model_ids)], states(seed), **OPTIONS)) for seed in seeds]

    chunks = [range(2000 + i, 2000 + n_jobs, CLIENT_THREADS) for i in range(CLIENT_THREADS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        submitted = list(pool.map(submit, chunks))
        records = [r for rs in pool.map(lambda jobs: [fetch(job) for _, job in jobs], submitted) for r in rs]
    elapsed = time.perf_counter() - started
    for jobs in submitted:
        jobs[0][0].close()
    assert all(record.status == "succeeded" for record in records), records
    return elapsed, len({(record.started_at, record.batch_size) for record in records})


def fetch(job: Job) -> JobRecord:
    """Wait for a job and fetch its result; its final record."""
    record = job.wait(progress=False)
    job.result()
    return record


def backlog(url: str, model_ids: list[str], n_jobs: int, n_workers: int) -> tuple[float, int]:
    """``n_jobs`` queued while a blocker job (adam, never batched) holds each worker, then the blockers
    cancelled; (seconds from the cancel until the last result is in hand, engine calls)."""
    with Client(url) as client:
        blockers = [client.submit(model_ids[0], states(i), **BLOCKER_OPTIONS) for i in range(n_workers)]
        while any(blocker.refresh().status != "running" for blocker in blockers):
            time.sleep(0.05)
        jobs = [
            client.submit(model_ids[seed % len(model_ids)], states(seed), **OPTIONS)
            for seed in range(3000, 3000 + n_jobs)
        ]
        started = time.perf_counter()
        for blocker in blockers:
            blocker.cancel()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            records = list(pool.map(fetch, jobs))
        elapsed = time.perf_counter() - started
        for blocker in blockers:
            assert blocker.wait(progress=False).status == "cancelled", "a blocker ended before the backlog was queued"
    assert all(record.status == "succeeded" for record in records), records
    return elapsed, len({(record.started_at, record.batch_size) for record in records})


def measure_batching(
    label: str, url: str, model_ids: list[str], engines: list[InProcess], n_jobs: int, n_workers: int
) -> str:
    """One row of the batching table: the burst and the backlog through REST beside the same calls back
    to back in this process (measured right after each)."""

    def local_s(first: int) -> float:
        return sum(engines[seed % len(engines)].solve(seed) for seed in range(first, first + n_jobs))

    burst_s, burst_calls = queue_burst(lambda: Client(url), model_ids, n_jobs)
    burst_local_s = local_s(2000)
    backlog_s, backlog_calls = backlog(url, model_ids, n_jobs, n_workers)
    backlog_local_s = local_s(3000)
    return (
        f"| {label} | {len(model_ids)} "
        f"| {n_jobs / burst_s:.1f} / {n_jobs / burst_local_s:.1f} ({burst_local_s / burst_s:.2f}x) | {burst_calls} "
        f"| {n_jobs / backlog_s:.1f} / {n_jobs / backlog_local_s:.1f} ({backlog_local_s / backlog_s:.2f}x) "
        f"| {backlog_calls} | {load_average()} |"
    )


def measure(
    name: str, connect: Callable[[], Client], model_path: Path, engine: InProcess, n_jobs: int, n_burst: int
) -> str:
    with connect() as client:
        model_id = client.upload_model(model_path).id
        for seed in range(5):  # warm: the worker's model cache and sandbox, first-call paths
            one_job(client, model_id, seed)
        overheads, worker_engine, local_engine = [], [], []
        for seed in range(n_jobs):
            local = engine.solve(seed)
            end_to_end, in_worker = one_job(client, model_id, seed)
            overheads.append(end_to_end - local)
            worker_engine.append(in_worker)
            local_engine.append(local)
    burst_s = burst(connect, model_id, n_burst)
    local_burst_s = sum(engine.solve(seed) for seed in range(1000, 1000 + n_burst))

    p50, p95 = np.percentile(overheads, [50, 95]) * 1e3
    worker_ms, local_ms = statistics.median(worker_engine) * 1e3, statistics.median(local_engine) * 1e3
    return (
        f"| {name} | {worker_ms:.1f} / {local_ms:.1f} ({worker_ms / local_ms:.2f}x) | {p50:.1f} | {p95:.1f} "
        f"| {n_burst / burst_s:.1f} / {n_burst / local_burst_s:.1f} ({local_burst_s / burst_s:.2f}x) "
        f"| {load_average()} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="worker counts to measure")
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--burst", type=int, default=200)
    parser.add_argument("--queue-burst", type=int, default=200)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from service_harness import grpc_server, start_service  # the test harness

    overhead, batching = [], []
    with tempfile.TemporaryDirectory(prefix="fpf-bench-") as tmp:
        paths = [small_model(Path(tmp) / f"bench-{i}.pt", seed=3 + i) for i in range(4)]
        engines = [InProcess(path) for path in paths]
        for n_workers in args.workers:
            # The production default the test harness turns off: a blocker's cancel kills its sandbox,
            # and the backlog behind it must not wait for a new one to start.
            quota = {
                "FPF_QUOTA_QUEUED_JOBS": str(max(args.burst, args.queue_burst) + n_workers),
                "FPF_SANDBOX_SPARE": "true",
            }
            with ExitStack() as stack:
                root = Path(tmp) / f"workers-{n_workers}"
                root.mkdir()
                service = stack.enter_context(start_service(root, **quota))
                for _ in range(n_workers - 1):
                    service.start_worker()
                target = stack.enter_context(grpc_server(service))
                for name, url in (("REST", service.url), ("gRPC", f"grpc://{target}")):
                    row = measure(
                        f"{name}, {n_workers}", lambda url=url: Client(url), paths[0], engines[0], args.jobs, args.burst
                    )
                    overhead.append(row)
                    print(row, flush=True)
            # Each batching setting on a service of its own, started alike: nothing left by an earlier
            # measurement (stored jobs, a sandbox's state) falls on one setting only.
            for batch in ("on", "off"):
                settings = {**quota, **({"FPF_BATCH_MAX_JOBS": "1"} if batch == "off" else {})}
                root = Path(tmp) / f"workers-{n_workers}-batching-{batch}"
                root.mkdir()
                with start_service(root, **settings) as service:
                    for _ in range(n_workers - 1):
                        service.start_worker()
                    with Client(service.url) as client:
                        model_ids = [client.upload_model(path).id for path in paths]
                        for model_id in model_ids:  # warm: each model loaded in a sandbox
                            fetch(client.submit(model_id, states(0), **OPTIONS))
                    for models in (model_ids[:1], model_ids):
                        row = measure_batching(
                            f"{batch}, {n_workers}", service.url, models, engines, args.queue_burst, n_workers
                        )
                        batching.append(row)
                        print(row, flush=True)

    print(f"\nsmall job: tanh RNN d={N_STATES}, {N_INITIAL} initial states, {OPTIONS}; {CLIENT_THREADS} client threads")
    print(
        "| transport, workers | engine ms: worker / in-process | overhead p50 ms | overhead p95 ms "
        "| burst jobs/s: service / in-process | load |"
    )
    print("|---|---|---|---|---|---|")
    print("\n".join(overhead))
    print(f"\n{args.queue_burst} small jobs over REST: a burst from {CLIENT_THREADS} threads, and a queued backlog")
    print(
        "| batching, workers | models | burst jobs/s: service / in-process | engine calls "
        "| backlog jobs/s: service / in-process | engine calls | load |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(batching))


if __name__ == "__main__":
    main()
