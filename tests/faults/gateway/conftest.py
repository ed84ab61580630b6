"""Fixtures of the fault suite: a Redis of its own that tests may kill, freeze and restart, and the
service (gateway + one Celery worker, real processes) running on it.

Everything runs on loopback and is stopped by PID. The Redis keeps an append-only file synced on
every write, as a production Redis with persistence would, so a killed and restarted Redis holds
every job that was acknowledged before the kill.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from private_redis import PrivateRedis
from service_harness import REPO, LiveService, start_service

from tests.faults.gateway.fault_harness import FAULT_SETTINGS


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
    with start_service(
        tmp_path_factory.mktemp("fault-service"), FPF_REDIS_URL=private_redis.url, **FAULT_SETTINGS
    ) as service:
        yield service


@pytest.fixture(scope="session")
def fault_model(fault_service: LiveService) -> dict[str, Any]:
    """The 3-bit flip-flop tanh RNN of tests/data, uploaded to :func:`fault_service` and ready."""
    model = fault_service.upload_model(REPO / "tests" / "data" / "flipflop_tanh.pt", timeout_s=120)
    assert model["status"] == "ready", model
    return model
