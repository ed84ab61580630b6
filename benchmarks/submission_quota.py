"""Submission cost against the number of jobs a tenant keeps: the stored-bytes quota check.

A submission checks its tenant's stored bytes before it stores anything. The check used to list
every job of the tenant and read the sizes of its files; it now reads a count the job store keeps
beside the records (service/gateway/quotas.py). Two measurements, each with a tenant keeping no
job and one keeping ``--stored`` finished jobs (an arrays file and a result file each, written as
the gateway and a worker write them):

* in process, both checks in the same run: ``enqueue_job`` (what ``POST /v1/jobs`` runs after
  parsing: the quota checks, the arrays file, the record) with the counted check and with the
  previous file scan (kept here as ``FileScanQuotas``), the four combinations interleaved so that
  load from elsewhere falls on all of them; each submitted job is removed again, untimed;
* through the service (gateway, worker, Redis; the test harness): ``POST /v1/jobs`` with the
  Python ``httpx`` client from the two tenants in turn (each job deleted again, untimed), with the
  check the gateway runs (the counted one, on this branch).

p50 and p95 of ``--submissions`` submissions each, and the ratio of the p50s with ``--stored``
jobs to those with none. Run: ``.venv/bin/python -m benchmarks.submission_quota [--stored 2000]
[--submissions 200]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from fpf_client.options import FinderOptions
from service.core.api_keys import KeyStore, Role
from service.core.artifacts import ArtifactStore
from service.core.records import Job, JobStatus, Model, ModelStatus
from service.core.settings import Settings
from service.core.store import RecordStore
from service.gateway.auth import Principal
from service.gateway.operations import enqueue_job, remove_job
from service.gateway.quotas import QuotaLimits, Quotas
from service.gateway.submission import Submission

REPO = Path(__file__).resolve().parents[1]
N_STATES, N_INPUTS, N_INITIAL = 8, 2, 16
#: Limits that admit every submission: the checks run in full and never refuse.
LIMITS = QuotaLimits(queued_jobs=10**9, stored_bytes=2**62, retry_after_s=1)


class FileScanQuotas(Quotas):
    """The previous stored-bytes check: every model record of the tenant, and the sizes of the files
    in each of its job directories, read at each check."""

    def __init__(self, limits: QuotaLimits, store: RecordStore, artifacts: ArtifactStore) -> None:
        super().__init__(limits, store)
        self.artifacts = artifacts

    def stored_bytes(self, tenant: str) -> int:
        models = sum(m.size_bytes for m in self.store.list_models(tenant))
        job_ids = self.store.redis.zrange(self.store.keys.tenant_jobs(tenant), 0, -1)
        return models + sum(_files_bytes(self.artifacts.job_dir(i)) for i in job_ids)


def _files_bytes(directory: Path) -> int:
    """Total size of the files in ``directory`` (0 when it is gone)."""
    total = 0
    try:
        for entry in directory.iterdir():
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return total


class _NoQueue:
    """The queue, left out: a submission's cost ends where the message would be sent."""

    def run_job(self, job_id: str, dispatch: int, countdown_s: float | None = None) -> None:
        return None


def submit(
    store: RecordStore,
    artifacts: ArtifactStore,
    settings: Settings,
    quotas: Quotas,
    tenant: str,
    model_id: str,
    seed: int,
) -> Job:
    """One small job of ``tenant`` through ``enqueue_job``, checked by ``quotas``."""
    states = np.random.default_rng(seed).normal(size=(N_INITIAL, N_STATES))
    submission = Submission(model_id=model_id, options=FinderOptions(), initial_states=states, inputs=None)
    principal = Principal(tenant=tenant, role=Role.USER)
    queue: Any = _NoQueue()
    job, _ = enqueue_job(submission, None, settings, store, artifacts, queue, principal=principal, quotas=quotas)
    return job


def store_finished_jobs(
    store: RecordStore, artifacts: ArtifactStore, settings: Settings, tenant: str, model_id: str, n: int
) -> None:
    """``n`` finished jobs of ``tenant``: each submitted as the gateway does, then claimed, given a
    result file and finished as a worker does."""
    quotas = Quotas(LIMITS, store)
    fake = np.random.default_rng(0)
    result: dict[str, Any] = {
        "xstar": fake.normal(size=(4, N_STATES)),
        "J_xstar": fake.normal(size=(4, N_STATES, N_STATES)),
    }
    for seed in range(n):
        job = submit(store, artifacts, settings, quotas, tenant, model_id, seed)
        assert store.claim(job.id, job.dispatch, "benchmark", heartbeat_ttl_s=60) is not None
        with artifacts.atomic_write(artifacts.result_path(job.id)) as out:
            np.savez(out, **result)
            result_bytes = out.tell()
        store.finish(job.id, job.dispatch, JobStatus.SUCCEEDED, result_bytes=result_bytes)


def _model_record(store: RecordStore, tenant: str) -> str:
    model_id = uuid.uuid4().hex
    model = Model(
        id=model_id,
        status=ModelStatus.READY,
        size_bytes=10_000,
        created_at=time.time(),
        n_states=N_STATES,
        n_inputs=N_INPUTS,
        tenant=tenant,
    )
    store.create_model(model)
    return model_id


def in_process(stored: int, submissions: int, redis_url: str) -> None:
    """Both checks, both tenants, interleaved, in this process."""
    settings = Settings()
    store = RecordStore.from_url(redis_url, f"fpfbench-quota-{uuid.uuid4().hex[:8]}", result_ttl_s=3600)
    try:
        with tempfile.TemporaryDirectory(prefix="fpf-quota-") as root:
            artifacts = ArtifactStore(root)
            models = {tenant: _model_record(store, tenant) for tenant in ("empty", "full")}
            started = time.perf_counter()
            store_finished_jobs(store, artifacts, settings, "full", models["full"], stored)
            print(f"stored {stored} finished jobs in {time.perf_counter() - started:.1f} s")
            checks = {"counted": Quotas(LIMITS, store), "file scan": FileScanQuotas(LIMITS, store, artifacts)}
            cases = [(check, tenant) for check in checks for tenant in models]
            times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
            for i in range(submissions):
                for check, tenant in cases[i % len(cases) :] + cases[: i % len(cases)]:
                    begin = time.perf_counter()
                    job = submit(store, artifacts, settings, checks[check], tenant, models[tenant], i)
                    times[check, tenant].append(time.perf_counter() - begin)
                    remove_job(job, store, artifacts)
        print(f"\nin process: enqueue_job, {submissions} submissions each (load {_load()})")
        print(f"{'check':<10} {'0 jobs p50/p95 ms':>20} {f'{stored} jobs p50/p95 ms':>23} {'ratio of p50s':>14}")
        for check in checks:
            empty, full = times[check, "empty"], times[check, "full"]
            print(f"{check:<10} {_p50_p95(empty):>20} {_p50_p95(full):>23} {_p50(full) / _p50(empty):>14.2f}")
    finally:
        keys = list(store.redis.scan_iter(match=f"{store.keys.prefix}*", count=1000))
        if keys:
            store.redis.delete(*keys)
        store.redis.close()


def through_the_service(stored: int, submissions: int) -> None:
    """``POST /v1/jobs`` on a live gateway from two tenants, one keeping ``stored`` jobs, interleaved."""
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from service_harness import start_service  # the test harness

    from benchmarks.service_overhead import small_model

    with tempfile.TemporaryDirectory(prefix="fpf-quota-") as root, start_service(Path(root)) as live:
        uploaded = live.upload_model(small_model(Path(root) / "model.pt"))
        assert uploaded["status"] == "ready", uploaded
        store = RecordStore.from_url(live.redis_url, live.prefix, result_ttl_s=3600)
        record = store.get_model(uploaded["id"], "local")
        assert record is not None
        keys = KeyStore(live.env["FPF_KEYS_FILE"])
        http = {}
        for tenant in ("empty", "full"):  # each holds a ready record of the uploaded file, as after its own upload
            store.create_model(replace(record, tenant=tenant))
            key = keys.create(tenant)[1]
            http[tenant] = httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        started = time.perf_counter()
        store_finished_jobs(store, ArtifactStore(live.data_dir), Settings(), "full", record.id, stored)
        print(f"\nstored {stored} finished jobs in {time.perf_counter() - started:.1f} s")
        posts = {tenant: _poster(client, record.id) for tenant, client in http.items()}
        times: dict[str, list[float]] = {tenant: [] for tenant in posts}
        for tenant in posts:
            posts[tenant](submissions)  # warm
        for i in range(submissions):
            for tenant in ("empty", "full") if i % 2 else ("full", "empty"):
                times[tenant].append(posts[tenant](i))
        for client in http.values():
            client.close()
        store.redis.close()
    print(f"through the service: POST /v1/jobs, {submissions} submissions each (load {_load()})")
    print(f"{'0 jobs p50/p95 ms':>20} {f'{stored} jobs p50/p95 ms':>23} {'ratio of p50s':>14}")
    empty, full = times["empty"], times["full"]
    print(f"{_p50_p95(empty):>20} {_p50_p95(full):>23} {_p50(full) / _p50(empty):>14.2f}")


def _poster(http: httpx.Client, model_id: str) -> Callable[[int], float]:
    """A function that submits one small job, deletes it again (untimed), and returns the POST's seconds."""

    def post(seed: int) -> float:
        states = np.random.default_rng(seed).normal(size=(N_INITIAL, N_STATES)).round(6).tolist()
        begin = time.perf_counter()
        response = http.post("/v1/jobs", json={"model_id": model_id, "initial_states": states})
        elapsed = time.perf_counter() - begin
        response.raise_for_status()
        http.delete(f"/v1/jobs/{response.json()['id']}").raise_for_status()
        return elapsed

    return post


def _p50(times: list[float]) -> float:
    return statistics.median(times)


def _p50_p95(times: list[float]) -> str:
    return f"{1000 * _p50(times):.2f} / {1000 * statistics.quantiles(times, n=20)[-1]:.2f}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stored", type=int, default=2000, help="finished jobs the full tenant keeps")
    parser.add_argument("--submissions", type=int, default=200, help="timed submissions per case")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11", help="Redis of the in-process part")
    parser.add_argument("--skip-service", action="store_true", help="only the in-process part")
    args = parser.parse_args()
    in_process(args.stored, args.submissions, args.redis_url)
    if not args.skip_service:
        through_the_service(args.stored, args.submissions)


if __name__ == "__main__":
    main()
