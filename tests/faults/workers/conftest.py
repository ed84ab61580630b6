"""Fixtures of the worker, client and validation fault tests: a service on a Redis of its own, which
they may kill and restart (``fault_redis``, ``fault_service``), and a small model on it (``fault_model``)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from service_harness import LiveService, free_port, start_service

from service.ops.embedded_redis import redis_server_argv, wait_until_ready

#: The queued-jobs quota of ``fault_service``: small, so that a burst of submissions goes over it.
QUEUED_JOBS_QUOTA = 3
#: The validation limit of ``fault_service``: a model that never returns is settled within seconds.
VALIDATION_LIMIT_S = 3.0


@dataclass
class OwnRedis:
    """A ``redis-server`` on a free loopback port, writing every command to its append-only file
    (so that a SIGKILL loses nothing), that a test may kill and start again on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [*redis_server_argv(self.directory, self.port), "--appendfsync", "always"]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_until_ready(self.url, 30, pid=self.process.pid):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL the server, by PID."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture(scope="session")
def fault_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("fault-redis"))
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def fault_service(fault_redis: OwnRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
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
