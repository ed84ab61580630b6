"""The per-tenant running-jobs quota on a live service with two workers: a tenant at its limit waits
queued while a worker is free, other tenants' jobs run meanwhile, and its job starts once a slot frees;
a deferred job's message held by a worker that is killed is sent again by the janitor."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import SLOW_OPTIONS, LiveService, random_states, start_service

from service.core.api_keys import KeyStore
from service.core.queue import task_id
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

RETRY_S = 1.0
RESEND_AFTER_S = 3.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = {
        "FPF_QUOTA_RUNNING_JOBS": "1",
        "FPF_RUNNING_QUOTA_RETRY_S": str(RETRY_S),
        "FPF_RESEND_QUEUED_AFTER_S": str(RESEND_AFTER_S),
    }
    with start_service(tmp_path_factory.mktemp("fpf-running-quota"), **settings) as live:
        live.start_worker()  # a second worker: one is free while lab A runs its one job
        yield live


@pytest.fixture(scope="module")
def clients(service: LiveService) -> Iterator[dict[str, httpx.Client]]:
    store = KeyStore(service.env["FPF_KEYS_FILE"])
    keys = {lab: store.create(lab)[1] for lab in ("lab-a", "lab-b")}
    made = {
        lab: httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        for lab, key in keys.items()
    }
    yield made
    for client in made.values():
        client.close()


def _wait(client: httpx.Client, job_id: str, statuses: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def _model(client: httpx.Client, path: Path) -> str:
    """Upload ``path`` for the client's tenant; its id once ready."""
    model_id = client.post("/v1/models", files={"file": (path.name, path.read_bytes())}).json()["id"]
    deadline = time.monotonic() + 60
    while (model := client.get(f"/v1/models/{model_id}").json())["status"] == "validating":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert model["status"] == "ready", model
    return model_id


def _submit(client: httpx.Client, model_id: str, n: int = 4, **options: Any) -> str:
    response = client.post(
        "/v1/jobs", json={"model_id": model_id, "initial_states": random_states(n), "options": options}
    )
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_a_tenant_at_its_running_limit_waits_while_others_run(
    clients: dict[str, httpx.Client], tanh_rnn_path: Path
) -> None:
    a, b = clients["lab-a"], clients["lab-b"]
    model_a, model_b = _model(a, tanh_rnn_path), _model(b, tanh_rnn_path)
    slow = _submit(a, model_a, 1024, **SLOW_OPTIONS)
    assert _wait(a, slow, {"running", "succeeded", "failed"})["status"] == "running"
    waiting = _submit(a, model_a)
    other = _submit(b, model_b)

    assert _wait(b, other, {"succeeded", "failed"})["status"] == "succeeded"  # on the free worker
    time.sleep(3 * RETRY_S)  # the free worker has taken lab A's second job, and deferred it, meanwhile
    held = a.get(f"/v1/jobs/{waiting}").json()
    assert held["status"] == "queued" and held["attempts"] == 0, held
    assert a.get(f"/v1/jobs/{slow}").json()["status"] == "running"

    a.post(f"/v1/jobs/{slow}/cancel")
    assert _wait(a, slow, {"cancelled"})["status"] == "cancelled"
    started = time.monotonic()
    done = _wait(a, waiting, {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert time.monotonic() - started < 10 * RETRY_S + 10


def test_a_deferred_message_held_by_a_killed_worker_is_sent_again(
    service: LiveService, clients: dict[str, httpx.Client], tanh_rnn_path: Path
) -> None:
    """A deferred job's message waits in a worker until its countdown ends, out of the queue. Killed
    there, the broker would hand it back only after its visibility timeout (an hour); the janitor sends
    it again."""
    a = clients["lab-a"]
    model = _model(a, tanh_rnn_path)
    slow = _submit(a, model, 1024, **SLOW_OPTIONS)
    assert _wait(a, slow, {"running", "succeeded", "failed"})["status"] == "running"
    deferred = _submit(a, model)
    store = RecordStore.from_url(service.redis_url, service.prefix, result_ttl_s=3600)
    try:
        deadline = time.monotonic() + 30
        while True:  # deferred at least once, its message held by the free worker
            job = store.get_job(deferred)
            if job.dispatch > 1 and task_id(job.id, job.dispatch) not in store.waiting_task_ids("gpu"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    finally:
        store.redis.close()
    for worker in list(service.workers):
        service.kill_worker(worker)
    a.post(f"/v1/jobs/{slow}/cancel")  # its lost run ends cancelled instead of running again
    service.start_worker()
    done = _wait(a, deferred, {"succeeded", "failed"}, timeout_s=RESEND_AFTER_S + 60)
    assert done["status"] == "succeeded" and done["attempts"] == 1, done
    assert _wait(a, slow, {"cancelled"})["status"] == "cancelled"
