"""Redis killed and frozen under a live gateway and worker: 503 with Retry-After within a bound, never a 500
or a hang, and afterwards 200 again with every job still there."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from private_redis import PrivateRedis
from service_harness import LiveService, grpc_server

from tests.faults.gateway.fault_harness import FAULT_SETTINGS

pytestmark = pytest.mark.integration

SOCKET_TIMEOUT_S = float(FAULT_SETTINGS["FPF_REDIS_SOCKET_TIMEOUT_S"])
READYZ_TIMEOUT_S = float(FAULT_SETTINGS["FPF_READYZ_TIMEOUT_S"])
#: An answer during an outage comes within the Redis timeouts (a couple of commands, one reconnection)
#: plus scheduling slack on a busy machine; the old gateway blocked ~5 s per command, then answered 500.
OUTAGE_ANSWER_BOUND_S = 4 * SOCKET_TIMEOUT_S + 3.0
RECOVERY_BOUND_S = 60.0


def _job_body(model: dict[str, Any], n: int = 8, seed: int = 0) -> dict[str, Any]:
    states = np.random.default_rng(seed).uniform(-1, 1, size=(n, model["n_states"])).round(6)
    return {"model_id": model["id"], "initial_states": states.tolist()}


@pytest.fixture
def http(fault_service: LiveService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fault_service.url, timeout=30) as client:
        yield client


@pytest.fixture
def finished_job(fault_service: LiveService, fault_model: dict[str, Any], http: httpx.Client) -> dict[str, Any]:
    """A job that succeeded before the outage."""
    response = http.post("/v1/jobs", json=_job_body(fault_model))
    assert response.status_code == 202, response.text
    job = fault_service.wait_job(response.json()["id"])
    assert job["status"] == "succeeded", job
    return job


def _requests(model: dict[str, Any], job_id: str) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    """One request of each kind a client makes, each of which needs Redis."""
    return {
        "GET job": lambda c: c.get(f"/v1/jobs/{job_id}"),
        "GET jobs": lambda c: c.get("/v1/jobs"),
        "POST job": lambda c: c.post("/v1/jobs", json=_job_body(model, seed=1)),
        "GET model": lambda c: c.get(f"/v1/models/{model['id']}"),
        "readyz": lambda c: c.get("/readyz"),
    }


def _assert_outage_answers(http: httpx.Client, model: dict[str, Any], job_id: str) -> dict[str, float]:
    """Every request answers 503 service_unavailable with Retry-After, within the bound; seconds taken."""
    taken = {}
    for name, request in _requests(model, job_id).items():
        started = time.monotonic()
        response = request(http)
        taken[name] = time.monotonic() - started
        assert response.status_code == 503, f"{name}: {response.status_code} {response.text}"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "service_unavailable", f"{name}: {response.text}"
        assert int(response.headers["retry-after"]) == int(FAULT_SETTINGS["FPF_UNAVAILABLE_RETRY_AFTER_S"])
        assert taken[name] < OUTAGE_ANSWER_BOUND_S, f"{name} took {taken[name]:.1f} s"
    assert http.get("/healthz").status_code == 200
    return taken


def _wait_ready_without_errors(http: httpx.Client) -> float:
    """Poll /readyz until 200; any answer but 200 or 503 (the first after the outage was a 500) fails."""
    started = time.monotonic()
    while True:
        response = http.get("/readyz")
        assert response.status_code in (200, 503), f"/readyz after the outage: {response.status_code} {response.text}"
        if response.status_code == 200:
            return time.monotonic() - started
        assert time.monotonic() - started < RECOVERY_BOUND_S, response.text
        time.sleep(0.1)


def _assert_recovered(service: LiveService, http: httpx.Client, model: dict[str, Any], job: dict[str, Any]) -> None:
    """The job from before the outage is intact, and a new job runs to success."""
    _wait_ready_without_errors(http)
    before = http.get(f"/v1/jobs/{job['id']}")
    assert before.status_code == 200 and before.json()["status"] == "succeeded", before.text
    assert http.get(f"/v1/jobs/{job['id']}/result").status_code == 200
    response = http.post("/v1/jobs", json=_job_body(model, seed=2))
    assert response.status_code == 202, response.text
    assert service.wait_job(response.json()["id"], timeout_s=RECOVERY_BOUND_S)["status"] == "succeeded"


def test_redis_killed_gives_503_with_retry_after_then_recovers(
    fault_service: LiveService,
    private_redis: PrivateRedis,
    fault_model: dict[str, Any],
    finished_job: dict[str, Any],
    http: httpx.Client,
) -> None:
    private_redis.kill()
    try:
        _assert_outage_answers(http, fault_model, finished_job["id"])
    finally:
        private_redis.start()
    _assert_recovered(fault_service, http, fault_model, finished_job)


def test_redis_frozen_gives_503_within_the_timeouts_and_readyz_never_hangs(
    fault_service: LiveService,
    private_redis: PrivateRedis,
    fault_model: dict[str, Any],
    finished_job: dict[str, Any],
    http: httpx.Client,
) -> None:
    private_redis.freeze()
    try:
        taken = _assert_outage_answers(http, fault_model, finished_job["id"])
        assert taken["readyz"] < READYZ_TIMEOUT_S + 2.0
    finally:
        private_redis.thaw()
    _assert_recovered(fault_service, http, fault_model, finished_job)


def test_grpc_answers_unavailable_with_the_same_code_while_redis_is_down(
    fault_service: LiveService,
    private_redis: PrivateRedis,
    finished_job: dict[str, Any],
) -> None:
    import grpc

    from fpf_client.rpc import codec
    from fpf_client.rpc.stubs import load

    pb2, pb2_grpc = load().pb2, load().pb2_grpc
    with grpc_server(fault_service) as target, grpc.insecure_channel(target) as channel:
        stub = pb2_grpc.FixedPointServiceStub(channel)
        assert stub.GetJob(pb2.GetJobRequest(job_id=finished_job["id"]), timeout=30).id == finished_job["id"]
        private_redis.kill()
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as raised:
                stub.GetJob(pb2.GetJobRequest(job_id=finished_job["id"]), timeout=30)
            assert time.monotonic() - started < OUTAGE_ANSWER_BOUND_S
        finally:
            private_redis.start()
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE, raised.value
        error = codec.error_of_rpc(raised.value, target)
        assert error.code.value == "service_unavailable" and "Redis" in error.detail
        assert error.extra["retry_after_s"] == int(FAULT_SETTINGS["FPF_UNAVAILABLE_RETRY_AFTER_S"])
        assert stub.GetJob(pb2.GetJobRequest(job_id=finished_job["id"]), timeout=30).id == finished_job["id"]
