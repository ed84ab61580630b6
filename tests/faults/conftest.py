"""Fixtures of the fault suite: a Redis of its own that tests may kill, freeze and restart, and the
service (gateway + one Celery worker, real processes) running on it.

Everything runs on loopback and is stopped by PID. The Redis keeps an append-only file synced on
every write, as a production Redis with persistence would, so a killed and restarted Redis holds
every job that was acknowledged before the kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_harness import REPO, LiveService, start_service

from tests.faults.fault_harness import FAULT_SETTINGS, PrivateRedis


@pytest.fixture(scope="session")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A Redis of the fault suite's own (never the shared one at 6379)."""
    server = PrivateRedis(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fault_service(private_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The gateway and one worker on :func:`private_redis`, with short outage timeouts (``FAULT_SETTINGS``)."""
    with start_service(tmp_path_factory.mktemp("fault-service"), FPF_REDIS_URL=private_redis.url,
                       **FAULT_SETTINGS) as service:
        yield service


@pytest.fixture(scope="session")
def fault_model(fault_service: LiveService) -> dict[str, Any]:
    """The 3-bit flip-flop tanh RNN of tests/data, uploaded to :func:`fault_service` and ready."""
    model = fault_service.upload_model(REPO / "tests" / "data" / "flipflop_tanh.pt", timeout_s=120)
    assert model["status"] == "ready", model
    return model


# --- the worker, client and validation fault tests (test_worker_*, test_client_*, test_validation_*) ----------
#: The queued-jobs quota of :func:`worker_fault_service`: small, so that a burst of submissions goes over it.
WORKER_FAULT_SETTINGS = {"FPF_QUOTA_QUEUED_JOBS": "3", "FPF_QUOTA_RETRY_AFTER_S": "1",
                         # A model that never returns is settled within seconds.
                         "FPF_VALIDATION_TIME_LIMIT_S": "3"}


@pytest.fixture(scope="session")
def worker_fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """A second private Redis, so that killing it never disturbs :func:`fault_service`."""
    server = PrivateRedis(tmp_path_factory.mktemp("worker-fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def worker_fault_service(worker_fault_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[LiveService]:
    """Gateway and one worker on :func:`worker_fault_redis` with ``WORKER_FAULT_SETTINGS``; tests that kill
    a part start it again."""
    with start_service(tmp_path_factory.mktemp("worker-fault-service"), FPF_REDIS_URL=worker_fault_redis.url,
                       **WORKER_FAULT_SETTINGS) as service:
        yield service


@pytest.fixture(scope="session")
def worker_fault_model(worker_fault_service: LiveService, tanh_rnn_path: Path) -> dict[str, Any]:
    """The 8-unit tanh RNN with 2 inputs (``tanh_rnn_path``), uploaded to :func:`worker_fault_service`."""
    model = worker_fault_service.upload_model(tanh_rnn_path, timeout_s=120)
    assert model["status"] == "ready", model
    return model
