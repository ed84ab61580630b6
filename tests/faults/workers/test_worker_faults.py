"""Worker faults on a live service: a worker killed mid-job loses no job, and a Redis error while a
job runs is the store's fault, never the engine's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from service_harness import LiveService, free_port, random_states

from fpf_client import Client
from service.core.store import RecordStore
from workers.runner import ProgressReporter

pytestmark = pytest.mark.integration

#: Adam on 256 states for a fixed number of iterations: seconds of work with progress reports.
STEADY_OPTIONS = {"method": "adam", "lr_init": 0.01, "max_iters": 6000, "tol_q": 1e-30, "tol_dq": 0}


def test_a_worker_killed_mid_job_loses_no_job(fault_service: LiveService, fault_model: dict[str, Any]) -> None:
    with Client(fault_service.url) as client:
        # The first job is running when the worker dies; the two queued behind it need not be long.
        jobs = [
            client.submit(fault_model["id"], random_states(256, seed=i), [[0.0, 0.0]], **{**STEADY_OPTIONS, **shorter})
            for i, shorter in enumerate([{}, {"max_iters": 300}, {"max_iters": 300}])
        ]
        running = fault_service.wait_status(jobs[0].id, {"running", "succeeded", "failed"}, timeout_s=120)
        assert running["status"] == "running", running
        fault_service.kill_worker()
        fault_service.start_worker()
        records = [job.wait(progress=False, timeout=240) for job in jobs]
        assert [record.status for record in records] == ["succeeded"] * 3, records
        assert records[0].attempts == 2  # run again after its worker was lost
        assert all(np.isfinite(job.result().xstar).all() for job in jobs)


def test_a_redis_restart_mid_job_is_the_stores_fault_not_the_engines(
    fault_service: LiveService, fault_redis: Any, fault_model: dict[str, Any]
) -> None:
    """Before, the worker logged "the engine failed" (redis.ConnectionError from the progress callback) and
    the job survived only because recording that failure failed too."""
    with Client(fault_service.url) as client:
        job = client.submit(fault_model["id"], random_states(256, seed=2), [[0.0, 0.0]], **STEADY_OPTIONS)
    running = fault_service.wait_status(job.id, {"running", "succeeded", "failed"}, timeout_s=120)
    assert running["status"] == "running", running
    noticed = f"job {job.id}: Redis is unavailable"
    fault_redis.kill()
    try:
        # Redis stays down until the worker has tried to write this job's progress and said why it could not.
        _until(lambda: noticed in _read(fault_service), "the worker did not notice the outage")
    finally:
        fault_redis.start()
    store = RecordStore.from_url(fault_service.redis_url, fault_service.prefix, result_ttl_s=3600)
    try:
        _until(lambda: store.get_job(job.id).status.is_final, "the job did not finish", 240)
        assert store.get_job(job.id).status.value == "succeeded"
    finally:
        store.redis.close()
    text = _read(fault_service)
    assert "progress is not recorded, the search goes on" in text
    assert "the engine failed" not in text


def _read(service: LiveService) -> str:
    """Every worker's log so far."""
    return "".join(path.read_text(errors="replace") for path in service.log_dir.glob("worker-*.log"))


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


def test_a_progress_report_redis_cannot_take_does_not_stop_the_search(caplog: pytest.LogCaptureFixture) -> None:
    """Before, the callback raised redis.ConnectionError into the engine and the job failed as ``internal``."""
    unreachable = RecordStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "fpftest", result_ttl_s=60)
    reporter = ProgressReporter(unreachable, "job-1", dispatch=0)
    with caplog.at_level(logging.WARNING, logger="workers.runner"):
        reporter.progress({"phase": "solve", "iteration": np.int64(3)})
        reporter._last_check = 0.0
        reporter.idle()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "job-1: Redis is unavailable" in warnings[0], warnings
    assert "the search goes on" in warnings[0]
