"""Fixtures of the worker, client and validation fault tests: a service on a Redis of its own, which
they may kill and restart (``fault_redis``, ``fault_service``), and a small model on it (``fault_model``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from private_redis import PrivateRedis
from service_harness import LiveService, start_service

#: The queued-jobs quota of ``fault_service``: small, so that a burst of submissions goes over it.
QUEUED_JOBS_QUOTA = 3
#: The validation limit of ``fault_service``: a model that never returns is settled within seconds.
VALIDATION_LIMIT_S = 3.0


@pytest.fixture(scope="session")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fault_service(fault_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """Gateway and one worker on ``fault_redis``; tests that kill a part start it again."""
    settings = {
        "FPF_QUOTA_QUEUED_JOBS": str(QUEUED_JOBS_QUOTA),
        "FPF_QUOTA_RETRY_AFTER_S": "1",
        "FPF_VALIDATION_TIME_LIMIT_S": str(VALIDATION_LIMIT_S),
    }
    with start_service(tmp_path_factory.mktemp("fpf-faults"), redis_url=fault_redis.url, **settings) as service:
        yield service


@pytest.fixture(scope="session")
def fault_model(fault_service: LiveService, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An 8-unit tanh RNN with 2 inputs, uploaded to ``fault_service`` and ready."""
    import torch

    class TanhRNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(3)
            self.W = torch.nn.Parameter(1.2 * torch.randn(8, 8, generator=generator) / 8**0.5)
            self.B = torch.nn.Parameter(torch.randn(8, 2, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T)

    path = tmp_path_factory.mktemp("fault-models") / "tanh.pt"
    torch.jit.script(TanhRNN()).save(str(path))
    model = fault_service.upload_model(path)
    assert model["status"] == "ready", model
    return model
