"""Cancellation and recovery: a running job stops on request, and survives its worker being killed."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from service_harness import LiveService, random_states

pytestmark = pytest.mark.integration

#: A job of a few seconds: long enough to be killed mid-run, short enough to run twice.
MEDIUM_JOB_OPTIONS = {"method": "adam", "adam": {"lr_init": 0.02}, "max_iters": 20000}


def _start_medium_job(live_service: LiveService, model_id: str) -> dict[str, Any]:
    with live_service.client() as http:
        response = http.post(
            "/v1/jobs",
            json={"model_id": model_id, "initial_states": random_states(512, seed=9), "options": MEDIUM_JOB_OPTIONS},
        )
    assert response.status_code == 202, response.text
    return _wait_for_progress(live_service, response.json()["id"])


def _wait_for_progress(live_service: LiveService, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job once the engine has reported progress on it (it is really computing)."""
    deadline = time.monotonic() + timeout_s
    with live_service.client() as http:
        while time.monotonic() < deadline:
            job = http.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"]:
                return job
            assert job["status"] in ("queued", "running"), job
            time.sleep(0.05)
    raise TimeoutError(f"job {job_id} reported no progress in {timeout_s} s")


def test_cancel_a_running_job_frees_the_worker(
    live_service: LiveService, tanh_model: dict[str, Any], slow_job: dict[str, Any]
) -> None:
    _wait_for_progress(live_service, slow_job["id"])
    with live_service.client() as http:
        asked = http.post(f"/v1/jobs/{slow_job['id']}/cancel")
        assert asked.status_code == 200 and asked.json()["cancel_requested"]
        started = time.monotonic()
        job = live_service.wait_job(slow_job["id"], timeout_s=10)
        assert job["status"] == "cancelled" and time.monotonic() - started < 5
        result = http.get(f"/v1/jobs/{slow_job['id']}/result")
        assert result.status_code == 409 and result.json()["code"] == "job_cancelled"

        quick = http.post("/v1/jobs", json={"model_id": tanh_model["id"], "initial_states": random_states(2)})
        assert live_service.wait_job(quick.json()["id"], timeout_s=30)["status"] == "succeeded"


def test_cancel_a_queued_job_at_once(
    live_service: LiveService, tanh_model: dict[str, Any], slow_job: dict[str, Any]
) -> None:
    with live_service.client() as http:
        queued = http.post("/v1/jobs", json={"model_id": tanh_model["id"], "initial_states": random_states(2)}).json()
        assert queued["status"] == "queued"
        cancelled = http.post(f"/v1/jobs/{queued['id']}/cancel").json()
        assert cancelled["status"] == "cancelled" and cancelled["attempts"] == 0
        http.post(f"/v1/jobs/{slow_job['id']}/cancel")
        live_service.wait_job(slow_job["id"], timeout_s=10)
        time.sleep(1)  # the worker receives the cancelled job's message and drops it
        assert http.get(f"/v1/jobs/{queued['id']}").json()["attempts"] == 0


def test_job_survives_sigkill_of_the_pool_process(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    job = _start_medium_job(live_service, tanh_model["id"])
    (pool_process,) = live_service.pool_children()
    os.kill(pool_process, signal.SIGKILL)
    killed = time.monotonic()

    finished = live_service.wait_job(job["id"], timeout_s=60)
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 2  # Celery's redelivery of the old message was dropped, not run again
    assert time.monotonic() - killed < 60
    assert pool_process not in live_service.pool_children()


def test_job_survives_sigkill_of_the_whole_worker(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    job = _start_medium_job(live_service, tanh_model["id"])
    live_service.kill_worker()
    requeued = live_service.wait_status(job["id"], {"queued"}, timeout_s=15)  # by the janitor, not the broker
    assert requeued["attempts"] == 1 and requeued["progress"] is None

    live_service.start_worker()
    finished = live_service.wait_job(job["id"], timeout_s=60)
    assert finished["status"] == "succeeded", finished
    assert finished["attempts"] == 2
