"""The janitor's sweep against the length of the queue: what the gateway pays each second.

Every ``FPF_JANITOR_INTERVAL_S`` (1 s) each gateway and gRPC server sweeps the store: lost runs,
lost messages, expired results. Looking for lost messages used to read every queued job's record
at each sweep; it now reads only the overdue ones, through an index of queued jobs by when their
message was due (service/core/store.py, ``queued_due``). The scan it replaced is kept here
(``scan_queued_jobs``) and timed beside it in the same run, against a Redis queue of ``--queued``
jobs none of which is overdue (a long queue that the workers are working through):

* the whole sweep (``Janitor.sweep``) with each look-up, CPU and wall time per sweep (median of
  ``--sweeps``), and the ratio to the same sweep with an empty queue.

Jobs are written straight into the store under a prefix of their own on the Redis at 127.0.0.1:6379
(database 15), and deleted afterwards. Run: ``.venv/bin/python -m benchmarks.janitor_sweep
[--queued 1000 10000] [--sweeps 30]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.records import Job, JobStatus
from service.core.store import RecordStore

REDIS_URL = "redis://127.0.0.1:6379/15"
#: Overdue after a minute, as FPF_RESEND_QUEUED_AFTER_S's default: no job here is.
RESEND_AFTER_S = 60.0


def scan_queued_jobs(store: RecordStore, due_before: float) -> list[Job]:
    """The look-up the index replaced: every queued job's record read, then filtered."""
    pipe = store.redis.pipeline(transaction=False)
    for job_id in store.redis.smembers(store.keys.jobs_in(JobStatus.QUEUED)):
        pipe.hgetall(store.keys.job(job_id))
    jobs = [Job.from_fields(raw) for raw in pipe.execute() if raw]
    return [job for job in jobs if (job.sent_at or job.created_at) < due_before]


class NoDispatch:
    """The janitor's dispatcher: nothing is overdue here, so nothing is ever sent."""

    def run_job(self, job_id: str, dispatch: int, countdown_s: float | None = None) -> None:
        raise AssertionError(f"job {job_id} was sent again")


@contextmanager
def store_with_queue(n_queued: int) -> Iterator[RecordStore]:
    """A store under a prefix of its own holding ``n_queued`` queued jobs, created just now."""
    store = RecordStore.from_url(REDIS_URL, f"fpfbench-janitor-{uuid.uuid4().hex[:8]}", result_ttl_s=3600)
    now = time.time()
    options = {"method": "auto", "max_iters": 2000, "tol_q": 1e-12}
    try:
        for _ in range(n_queued):
            job_id = uuid.uuid4().hex
            job = Job(
                id=job_id,
                model_id="m",
                status=JobStatus.QUEUED,
                n_initial_states=16,
                options=options,
                created_at=now,
                tenant="lab",
                batch_key=f"lab:m:{job_id[:2]}",
            )
            store.create_job(job)
        yield store
    finally:
        keys = list(store.redis.scan_iter(match=f"{store.keys.prefix}*", count=10_000))
        for start in range(0, len(keys), 10_000):
            store.redis.delete(*keys[start : start + 10_000])
        store.redis.close()


def time_sweeps(janitor: Janitor, n_sweeps: int) -> tuple[float, float]:
    """Median (CPU ms, wall ms) of one sweep."""
    cpu, wall = [], []
    for _ in range(n_sweeps):
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        janitor.sweep()
        cpu.append(time.process_time() - cpu_start)
        wall.append(time.perf_counter() - wall_start)
    return 1e3 * statistics.median(cpu), 1e3 * statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queued", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--sweeps", type=int, default=30)
    args = parser.parse_args()
    policy = JanitorPolicy(resend_queued_after_s=RESEND_AFTER_S, orphan_after_s=3600)

    print(f"one janitor sweep, median of {args.sweeps}; no queued job overdue")
    print("| queued jobs | look-up | CPU ms | wall ms | CPU vs empty queue |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="fpf-bench-") as tmp:
        artifacts = ArtifactStore(Path(tmp))
        empty_cpu: dict[str, float] = {}
        for n_queued in (0, *args.queued):
            with store_with_queue(n_queued) as store:
                indexed = Janitor(store, artifacts, NoDispatch(), policy)  # type: ignore[arg-type]
                scanning = Janitor(store, artifacts, NoDispatch(), policy)  # type: ignore[arg-type]
                scanning.store = _Scanning(store)  # type: ignore[assignment]
                for name, janitor in (("index", indexed), ("scan", scanning)):
                    janitor.sweep()  # the first sweep also sweeps directories and indexes old records
                    cpu_ms, wall_ms = time_sweeps(janitor, args.sweeps)
                    empty_cpu.setdefault(name, cpu_ms)
                    print(
                        f"| {n_queued} | {name} | {cpu_ms:.2f} | {wall_ms:.2f} | {cpu_ms / empty_cpu[name]:.1f}x |",
                        flush=True,
                    )


class _Scanning:
    """The store with the scan the index replaced as its look-up of overdue queued jobs."""

    def __init__(self, store: RecordStore) -> None:
        self._store = store

    def overdue_queued_jobs(self, due_before: float) -> list[Job]:
        return scan_queued_jobs(self._store, due_before)

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


if __name__ == "__main__":
    main()
