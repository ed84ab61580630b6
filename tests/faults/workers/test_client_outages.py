"""The client rides out outages on a live service: ``wait()`` returns the result through a gateway
kill and restart (sync and async clients), through a gRPC server kill and restart and through a
Redis kill and restart (sync and async, REST and gRPC), and submissions ride out a burst over the
queued-jobs quota (429 with Retry-After, gRPC RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from service_harness import REPO, LiveService, free_port, random_states, wait_for_grpc

from fpf_client import AsyncClient, Client, Job, JobRecord
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

#: Adam on 256 states for a fixed number of iterations: seconds of work, with progress all along.
STEADY_OPTIONS = {"method": "adam", "adam": {"lr_init": 0.01}, "max_iters": 6000, "tol_q": 1e-30, "tol_dq": 0}
TIMEOUT_S = 240.0


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


class Noticed(logging.Handler):
    """Set once the client logs that it waits for the service; keeps what it said."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for the service" in record.getMessage():
            self.messages.append(record.getMessage())
            self.event.set()


@pytest.fixture
def notices() -> Any:
    handler = Noticed()
    logger = logging.getLogger("fpf_client")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def noticed(notices: Noticed) -> threading.Event:
    return notices.event


def _waiter(flavour: str, url: str, job: Job, seen: list[JobRecord], outcome: dict[str, Any]) -> threading.Thread:
    """A thread that waits for ``job`` (feeding ``seen``) and keeps the final record as ``outcome["record"]``:
    the sync client's ``job.wait()``, or an AsyncClient of its own on ``url`` that also keeps the number
    of samples of the result as ``outcome["n_samples"]``."""

    async def wait_async() -> None:
        async with AsyncClient(url) as client:
            ajob = await client.get_job(job.id)
            outcome["record"] = await ajob.wait(progress=seen.append, timeout=TIMEOUT_S)
            outcome["n_samples"] = (await ajob.result()).info["n_samples"]

    if flavour == "sync":
        return threading.Thread(target=lambda: outcome.update(record=job.wait(progress=seen.append, timeout=TIMEOUT_S)))
    return threading.Thread(target=lambda: asyncio.run(wait_async()))


def _store(service: LiveService) -> RecordStore:
    return RecordStore.from_url(service.redis_url, service.prefix, result_ttl_s=3600)


def test_wait_returns_the_result_through_a_gateway_restart(
    fault_service: LiveService, fault_model: dict[str, Any]
) -> None:
    """Before, ``wait()`` raised ServiceUnavailable as soon as the gateway was gone."""
    port = int(fault_service.url.rsplit(":", 1)[1])
    seen: list[JobRecord] = []
    outcome: dict[str, Any] = {}
    async_seen = threading.Event()
    with Client(fault_service.url) as client:
        job = client.submit(fault_model["id"], random_states(256), [[0.0, 0.0]], **STEADY_OPTIONS)

        def wait_sync() -> None:
            outcome["sync"] = job.wait(progress=seen.append, timeout=TIMEOUT_S)

        async def wait_async() -> None:
            async with AsyncClient(fault_service.url) as aclient:
                ajob = await aclient.get_job(job.id)
                async_seen.set()
                outcome["async"] = await ajob.wait(progress=False, timeout=TIMEOUT_S)
                outcome["async_n"] = (await ajob.result()).info["n_samples"]

        waiters = [threading.Thread(target=wait_sync), threading.Thread(target=lambda: asyncio.run(wait_async()))]
        for waiter in waiters:
            waiter.start()
        _until(lambda: any(record.status == "running" for record in seen), "the job was not seen running")
        assert async_seen.wait(60), "the async client never reached the service"
        os.killpg(fault_service.gateway.pid, signal.SIGKILL)  # no chance to close its streams
        fault_service.gateway.wait(10)
        store = _store(fault_service)
        # The gateway stays down until the job is over, so that the waits can only learn it from the new one.
        _until(lambda: store.get_job(job.id).status.is_final, "the job did not finish", TIMEOUT_S)
        store.redis.close()
        fault_service.start_gateway(port)
        for waiter in waiters:
            waiter.join(TIMEOUT_S)
        assert outcome["sync"].status == outcome["async"].status == "succeeded", outcome
        assert client.get_job(job.id).result().info["n_samples"] == outcome["async_n"] == 256


def _grpc_server(service: LiveService, port: int) -> subprocess.Popen:
    """An ``fpf-server grpc`` process on ``service``'s Redis and data, answering on ``port``."""
    with open(service.log_dir / "grpc-restarts.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.ops.cli", "--log-level", "warning", "grpc", "--port", str(port)],
            cwd=REPO,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for_grpc(f"127.0.0.1:{port}", process, timeout_s=120)
    return process


def _kill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_grpc_wait_returns_the_result_through_a_server_restart(
    fault_service: LiveService, fault_model: dict[str, Any], flavour: str
) -> None:
    """Before, a broken WatchJob stream fell back to polling, whose first refused call was raised; and
    AsyncClient had no gRPC."""
    port = free_port()
    server = _grpc_server(fault_service, port)
    seen: list[JobRecord] = []
    outcome: dict[str, Any] = {}
    url = f"grpc://127.0.0.1:{port}"
    try:
        with Client(url) as client:
            job = client.submit(fault_model["id"], random_states(256, seed=3), [[0.0, 0.0]], **STEADY_OPTIONS)
            waiter = _waiter(flavour, url, job, seen, outcome)
            waiter.start()
            _until(lambda: any(record.status == "running" for record in seen), "the job was not seen running")
            _kill(server)
            store = _store(fault_service)
            _until(lambda: store.get_job(job.id).status.is_final, "the job did not finish", TIMEOUT_S)
            store.redis.close()
            server = _grpc_server(fault_service, port)
            waiter.join(TIMEOUT_S)
            assert outcome["record"].status == "succeeded", outcome
            assert job.result().info["n_samples"] == 256
            assert outcome.get("n_samples", 256) == 256
    finally:
        _kill(server)


@contextmanager
def _url_of(protocol: str, service: LiveService) -> Iterator[str]:
    """The gateway's URL, or that of a gRPC server started beside it for the block."""
    if protocol == "http":
        yield service.url
        return
    port = free_port()
    server = _grpc_server(service, port)
    try:
        yield f"grpc://127.0.0.1:{port}"
    finally:
        _kill(server)


@pytest.mark.parametrize(("flavour", "protocol"), [("sync", "http"), ("async", "grpc")])
def test_wait_returns_the_result_through_a_redis_restart(
    fault_service: LiveService,
    fault_redis: Any,
    fault_model: dict[str, Any],
    noticed: threading.Event,
    flavour: str,
    protocol: str,
) -> None:
    """Before, ``wait()`` raised ``FpfError [internal]`` in 3 of 3 trials."""
    seen: list[JobRecord] = []
    outcome: dict[str, Any] = {}
    with _url_of(protocol, fault_service) as url, Client(url) as client:
        job = client.submit(fault_model["id"], random_states(256, seed=1), [[0.0, 0.0]], **STEADY_OPTIONS)
        waiter = _waiter(flavour, url, job, seen, outcome)
        waiter.start()
        _until(lambda: any(record.status == "running" for record in seen), "the job was not seen running")
        fault_redis.kill()
        try:
            _until(lambda: noticed.is_set() or not waiter.is_alive(), "the client did not notice the outage", 60)
        finally:
            fault_redis.start()
        waiter.join(TIMEOUT_S)
        record = outcome["record"]
        assert record.status == "succeeded", record
        assert job.result().info["n_samples"] == 256
        assert outcome.get("n_samples", 256) == 256


def test_a_burst_over_the_queued_jobs_quota_is_ridden_out(
    fault_service: LiveService, fault_model: dict[str, Any]
) -> None:
    """Before, the first 429 was raised to the caller with no way to wait for it."""
    statuses: list[int] = []
    with Client(fault_service.url) as client:
        client._http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
        jobs = [
            client.submit(
                fault_model["id"],
                random_states(64, seed=i),
                [[0.0, 0.0]],
                **{**STEADY_OPTIONS, "max_iters": 3000},
            )
            for i in range(7)
        ]
        records = [job.wait(progress=False, timeout=TIMEOUT_S) for job in jobs]
    assert 429 in statuses  # the burst did go over the quota
    assert [record.status for record in records] == ["succeeded"] * 7
    assert len({job.id for job in jobs}) == 7


def test_an_async_grpc_burst_over_the_queued_jobs_quota_is_ridden_out(
    fault_service: LiveService, fault_model: dict[str, Any], notices: Noticed
) -> None:
    """AsyncClient over gRPC waits out RESOURCE_EXHAUSTED ``quota_exceeded`` as the sync client waits out 429."""

    async def burst(url: str) -> list[JobRecord]:
        async with AsyncClient(url) as client:
            # One after another, as the sync test submits: the quota is checked when a submission arrives.
            jobs = [
                await client.submit(
                    fault_model["id"],
                    random_states(64, seed=i),
                    [[0.0, 0.0]],
                    **{**STEADY_OPTIONS, "max_iters": 3000},
                )
                for i in range(7)
            ]
            assert len({job.id for job in jobs}) == 7
            return [await job.wait(progress=False, timeout=TIMEOUT_S) for job in jobs]

    with _url_of("grpc", fault_service) as url:
        records = asyncio.run(burst(url))
    assert any("quota_exceeded" in message for message in notices.messages), notices.messages
    assert [record.status for record in records] == ["succeeded"] * 7
