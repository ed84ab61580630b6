"""Service overhead: what a small job costs through the service beyond the engine's own time.

Starts a gateway, a gRPC server and ``--workers`` warm Celery workers (the test harness, against
the Redis at 127.0.0.1:6379; models run in the bubblewrap sandbox, as in production) with a
queued-jobs quota that admits the whole burst, then, for each transport (REST and gRPC) through
the Python client, measures

* latency: ``--jobs`` small jobs one after another, client -> result in hand (submit, then
  ``Job.result()``: one request that waits for the job), against the same call of the engine in
  this process: the overhead is the difference (p50, p95), and the worker's recorded engine time
  is set beside the in-process one (measured once every worker has served the tenant and the
  service has gone idle: no sandbox starting in the background);
* throughput: ``--burst`` small jobs from 8 client threads, each submitting and waiting, against
  the same jobs run back to back in this process (the ratio is what the service keeps of the
  engine's rate on the same cores);
* dynamic batching: ``--queue-burst`` small jobs on one model and spread over four models, with
  batching on (``FPF_BATCH_MAX_JOBS`` at its default) and off (``FPF_BATCH_MAX_JOBS=1``), each
  beside the same calls run back to back in this process, with the engine calls the service made
  (distinct batches, from the job records). Twice: as a burst (submitted at once by 8 client
  threads, then every result fetched), and as a backlog (queued while blocker jobs of another
  tenant hold every worker, timed from the blockers' cancel to the last result in hand: the
  workers' own rate), with the CPU each part of the service spent on the backlog per job (this
  process's client threads, the gateway, the workers' main processes, their pool processes, the
  sandboxes, Redis) beside the in-process engine's time per job: where the time goes.

Every in-process figure comes from the same run, so load from elsewhere falls on both sides; the
load average is printed beside each table.

Run: ``.venv/bin/python -m benchmarks.service_overhead [--workers 1 4] [--jobs 100] [--burst 200]
[--queue-burst 200] [--keep DIR]`` (``--keep``: the services' directories, logs included, stay in DIR).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fpf_client import Client, Job
from fpf_client.records import JobRecord

REPO = Path(__file__).resolve().parents[1]
N_STATES, N_INPUTS, N_INITIAL = 8, 2, 16
OPTIONS = {"method": "auto", "random_seed": 0}
CLIENT_THREADS = 8
#: A job that runs until it is cancelled (adam cannot meet tol_q; adam is never batched): it holds a worker.
BLOCKER_OPTIONS = {"method": "adam", "lr_init": 0.01, "max_iters": 1_000_000, "tol_q": 1e-30, "tol_dq": 0}
#: A job that runs a second or so and ends on its own: submitted one per worker, they run side by side.
HOLDER_OPTIONS = {**BLOCKER_OPTIONS, "max_iters": 5_000}


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


def one_job(client: Client, model_id: str, seed: int) -> tuple[float, Job]:
    """Submit and fetch the result: (client seconds, the job)."""
    started = time.perf_counter()
    job = client.submit(model_id, states(seed), **OPTIONS)
    job.result()
    return time.perf_counter() - started, job


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
        list(pool.map(lambda jobs: [job.result() for _, job in jobs], submitted))
    elapsed = time.perf_counter() - started
    records = [job.refresh() for jobs in submitted for _, job in jobs]
    for jobs in submitted:
        jobs[0][0].close()
    return elapsed, engine_calls(records)


def engine_calls(records: list[JobRecord]) -> int:
    """The engine calls that ran ``records``' jobs (distinct batches), once each has succeeded."""
    assert all(record.status == "succeeded" for record in records), records
    return len({(record.started_at, record.batch_size) for record in records})


#: The parts of the service whose CPU the backlog row splits, in the order printed.
PARTS = ("client", "gateway", "worker", "pool", "sandbox", "redis")


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pids: list[int]) -> list[int]:
    """Every process below ``pids`` (Linux /proc)."""
    from service_harness import children_of

    below = [child for pid in pids for child in children_of(pid)]
    return below + descendants(below) if below else []


def pool_processes(service: Any) -> list[int]:
    """The pool processes of every worker of ``service``."""
    from service_harness import children_of

    return [pool for worker in service.workers for pool in children_of(worker.pid)]


def redis_servers() -> list[int]:
    """The PIDs of every ``redis-server`` on the host."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "redis-server":
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


class CpuByPart:
    """The CPU seconds a service's processes spend, by part, between :meth:`start` and :meth:`stop`.

    A process that exits in between (a cancelled job's sandbox) is left out; one that starts in
    between counts from zero. Redis is every ``redis-server`` on the host: run it on an idle one.
    """

    def __init__(self, service: Any) -> None:
        self.service = service
        self._before: dict[int, float] = {}
        self._client_s = 0.0

    def _pids(self) -> dict[str, list[int]]:
        pools = pool_processes(self.service)
        gateway = self.service.gateway.pid
        return {
            "gateway": [gateway, *descendants([gateway])],
            "worker": [worker.pid for worker in self.service.workers],
            "pool": pools,
            "sandbox": descendants(pools),
            "redis": redis_servers(),
        }

    def start(self) -> None:
        self._client_s = time.process_time()
        self._before = {pid: cpu for pids in self._pids().values() for pid in pids if (cpu := cpu_s(pid)) is not None}

    def stop(self) -> dict[str, float]:
        spent = {"client": time.process_time() - self._client_s}
        for part, pids in self._pids().items():
            spent[part] = sum(cpu - self._before.get(pid, 0.0) for pid in pids if (cpu := cpu_s(pid)) is not None)
        return spent


@dataclass(frozen=True)
class Labs:
    """Clients of two tenants of one service: the lab whose jobs are measured, and the other whose
    blocker jobs hold the workers."""

    url: str
    lab_key: str
    other_key: str

    @classmethod
    def of(cls, service: Any) -> Labs:
        from service.core.api_keys import KeyStore

        keys = KeyStore(service.env["FPF_KEYS_FILE"])
        return cls(service.url, keys.create("bench-lab")[1], keys.create("bench-blockers")[1])

    def lab(self) -> Client:
        return Client(self.url, api_key=self.lab_key)

    def other(self) -> Client:
        return Client(self.url, api_key=self.other_key)


def hold_every_worker(client: Client, model_id: str, n_workers: int) -> None:
    """Run one job of ``client``'s tenant per worker, side by side (each a second or so): a worker
    takes one at a time, so each serves the tenant."""
    holders = [client.submit(model_id, states(i), **HOLDER_OPTIONS) for i in range(n_workers)]
    for holder in holders:
        holder.wait(progress=False)


def warm_every_worker(client: Client, model_id: str, service: Any) -> None:
    """Run jobs of ``client``'s tenant side by side until every worker's pool process has a sandbox.

    Called where no other tenant's sandbox is left (the services here keep no spare, and a blocker's
    cancel ends its sandbox), so a pool process with a child has the tenant's.
    """
    from service_harness import children_of

    for _ in range(10):
        pools = pool_processes(service)
        if all(children_of(pool) for pool in pools):
            return
        hold_every_worker(client, model_id, len(pools))
    raise RuntimeError("a worker never started a sandbox for the benchmark's tenant")


def settle(service: Any, window_s: float = 0.5, idle_share: float = 0.05, give_up_s: float = 120.0) -> None:
    """Wait until the service's processes are idle (under ``idle_share`` of a core over ``window_s``):
    sandboxes that start in the background, such as a spare replacing the one a tenant took, would
    otherwise share the cores with the first jobs measured."""
    cpu = CpuByPart(service)
    give_up = time.monotonic() + give_up_s
    while time.monotonic() < give_up:
        cpu.start()
        time.sleep(window_s)
        spent = cpu.stop()
        if sum(seconds for part, seconds in spent.items() if part != "client") < idle_share * window_s:
            return
    raise RuntimeError(f"the service did not go idle within {give_up_s:g} s")


def backlog(
    labs: Labs, model_ids: list[str], blocker_model: Path, n_jobs: int, cpu: CpuByPart
) -> tuple[float, int, dict[str, float]]:
    """``n_jobs`` queued while blocker jobs (adam, never batched) of another tenant hold every worker,
    then the blockers cancelled; (seconds from the cancel until the last result is in hand, engine
    calls, CPU seconds by part over that time). A cancel ends the blocker's sandbox; being another
    tenant's, it leaves the backlog's warm sandbox alone."""
    n_workers = len(cpu.service.workers)
    with labs.lab() as client, labs.other() as other:
        warm_every_worker(client, model_ids[0], cpu.service)
        blocking_model = other.upload_model(blocker_model).id
        blockers = [other.submit(blocking_model, states(i), **BLOCKER_OPTIONS) for i in range(n_workers)]
        # Computing, not only claimed: each blocker's sandbox has started before the window opens.
        while any(blocker.refresh().progress is None for blocker in blockers):
            assert all(blocker.record.status in ("queued", "running") for blocker in blockers), blockers
            time.sleep(0.05)
        jobs = [
            client.submit(model_ids[seed % len(model_ids)], states(seed), **OPTIONS)
            for seed in range(3000, 3000 + n_jobs)
        ]
        cpu.start()
        started = time.perf_counter()
        for blocker in blockers:
            blocker.cancel()
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            list(pool.map(Job.result, jobs))
        elapsed = time.perf_counter() - started
        spent = cpu.stop()
        records = [job.refresh() for job in jobs]
        for blocker in blockers:
            assert blocker.wait(progress=False).status == "cancelled", "a blocker ended before the backlog was queued"
    return elapsed, engine_calls(records), spent


def measure_batching(
    label: str, service: Any, labs: Labs, model_ids: list[str], paths: list[Path], engines: list[InProcess], n_jobs: int
) -> tuple[str, str]:
    """Rows of the batching table and the backlog's CPU table: the burst and the backlog through REST
    beside the same calls back to back in this process (measured right after each)."""

    def local_s(first: int) -> float:
        return sum(engines[seed % len(engines)].solve(seed) for seed in range(first, first + n_jobs))

    burst_s, burst_calls = queue_burst(labs.lab, model_ids, n_jobs)
    burst_local_s = local_s(2000)
    backlog_s, backlog_calls, spent = backlog(labs, model_ids, paths[0], n_jobs, CpuByPart(service))
    backlog_local_s = local_s(3000)
    per_job_ms = {part: 1e3 * seconds / n_jobs for part, seconds in spent.items()}
    return (
        f"| {label} | {len(model_ids)} "
        f"| {n_jobs / burst_s:.1f} / {n_jobs / burst_local_s:.1f} ({burst_local_s / burst_s:.2f}x) | {burst_calls} "
        f"| {n_jobs / backlog_s:.1f} / {n_jobs / backlog_local_s:.1f} ({backlog_local_s / backlog_s:.2f}x) "
        f"| {backlog_calls} | {load_average()} |",
        f"| {label} | {len(model_ids)} | "
        + " | ".join(f"{per_job_ms[part]:.2f}" for part in PARTS)
        + f" | {sum(per_job_ms.values()):.2f} | {1e3 * backlog_local_s / n_jobs:.2f} "
        f"| {1e3 * backlog_s / n_jobs:.2f} |",
    )


def measure(
    name: str,
    service: Any,
    connect: Callable[[], Client],
    model_path: Path,
    engine: InProcess,
    n_jobs: int,
    n_burst: int,
) -> str:
    with connect() as client:
        model_id = client.upload_model(model_path).id
        hold_every_worker(client, model_id, len(service.workers))  # each worker's sandbox for the tenant
        for seed in range(5):  # warm: the workers' model caches, first-call paths
            one_job(client, model_id, seed)
        settle(service)
        overheads, worker_engine, local_engine = [], [], []
        for seed in range(n_jobs):
            local = engine.solve(seed)
            end_to_end, job = one_job(client, model_id, seed)
            overheads.append(end_to_end - local)
            worker_engine.append(job.refresh().timings.engine_s)
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
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="run the services in DIR (new or empty) and keep it, logs included"
    )
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from service_harness import grpc_server, start_service  # the test harness

    overhead: list[str] = []
    batching: list[str] = []
    backlog_cpu: list[str] = []
    with ExitStack() as run:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = run.enter_context(tempfile.TemporaryDirectory(prefix="fpf-bench-"))
        paths = [small_model(Path(tmp) / f"bench-{i}.pt", seed=3 + i) for i in range(4)]
        engines = [InProcess(path) for path in paths]
        for n_workers in args.workers:
            quota = {"FPF_QUOTA_QUEUED_JOBS": str(max(args.burst, args.queue_burst) + n_workers)}
            with ExitStack() as stack:
                root = Path(tmp) / f"workers-{n_workers}"
                root.mkdir()
                # With the spare sandbox of production, which the test harness turns off.
                service = stack.enter_context(start_service(root, **quota, FPF_SANDBOX_SPARE="true"))
                for _ in range(n_workers - 1):
                    service.start_worker()
                target = stack.enter_context(grpc_server(service))
                for name, url in (("REST", service.url), ("gRPC", f"grpc://{target}")):
                    row = measure(
                        f"{name}, {n_workers}",
                        service,
                        lambda url=url: Client(url),
                        paths[0],
                        engines[0],
                        args.jobs,
                        args.burst,
                    )
                    overhead.append(row)
                    print(row, flush=True)
            # Each batching setting on a service of its own, started alike: nothing left by an earlier
            # measurement (stored jobs, a sandbox's state) falls on one setting only.
            # No spare sandbox here: the backlog's tenant keeps its warm sandbox through the cancel of
            # the blockers, while a spare taken by a blocker would start again in the measured window.
            for batch in ("on", "off"):
                settings = {
                    **quota,
                    "FPF_SANDBOX_SPARE": "false",
                    **({"FPF_BATCH_MAX_JOBS": "1"} if batch == "off" else {}),
                }
                root = Path(tmp) / f"workers-{n_workers}-batching-{batch}"
                root.mkdir()
                with start_service(root, **settings) as service:
                    for _ in range(n_workers - 1):
                        service.start_worker()
                    labs = Labs.of(service)
                    with labs.lab() as client:
                        model_ids = [client.upload_model(path).id for path in paths]
                        for model_id in model_ids:  # warm: each model loaded in a sandbox
                            client.submit(model_id, states(0), **OPTIONS).result()
                    for models in (model_ids[:1], model_ids):
                        row, cpu_row = measure_batching(
                            f"{batch}, {n_workers}", service, labs, models, paths, engines, args.queue_burst
                        )
                        batching.append(row)
                        backlog_cpu.append(cpu_row)
                        print(row, cpu_row, sep="\n", flush=True)

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
    print("\nthe backlog's CPU per job (ms) by part, beside the in-process engine's and the wall time per job")
    print(f"| batching, workers | models | {' | '.join(PARTS)} | total | in-process engine | wall |")
    print("|---|---|" + "---|" * (len(PARTS) + 3))
    print("\n".join(backlog_cpu))


if __name__ == "__main__":
    main()
