"""Fixtures shared by the whole suite: a live fpf service (started on first use) and a small TorchScript model.

``live_service`` (session scope) runs a real Celery worker and the gateway under uvicorn
against the Redis at 127.0.0.1:6379, in a database of its own (``FPF_TEST_REDIS_DB``,
default 11) under a unique key prefix, with a temporary data directory; everything is
stopped by PID and deleted afterwards. Other test modules (the client's) reuse it
through its ``url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from export_nets import SharedExports
from service_harness import SLOW_OPTIONS, LiveService, grpc_server, random_states, start_service


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files with tests that start processes or take seconds run first, so that the parallel workers of
    ``make test`` finish together: those files are the long ones, and the quick ones fill in behind."""
    long_files = {
        item.path for item in items if item.get_closest_marker("integration") or item.get_closest_marker("slow")
    }
    items.sort(key=lambda item: item.path not in long_files)


@pytest.fixture(scope="session")
def live_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The whole service, started once per test session and torn down by PID."""
    with start_service(tmp_path_factory.mktemp("fpf-live")) as service:
        yield service


@pytest.fixture(scope="session")
def shared_exports(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> SharedExports:
    """The ONNX and SavedModel exports of tests/support/export_nets.py, written once for the whole run:
    under xdist, in the run's directory that every worker's own temporary directory sits in."""
    base = tmp_path_factory.getbasetemp()
    return SharedExports((base if worker_id == "master" else base.parent) / "shared-exports")


@pytest.fixture(scope="session")
def live_grpc_url(live_service: LiveService) -> Iterator[str]:
    """``grpc://host:port`` of an ``fpf-server grpc`` process beside the live gateway (same Redis and data)."""
    with grpc_server(live_service) as target:
        yield f"grpc://{target}"


@pytest.fixture(scope="session")
def tanh_rnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scripted 8-unit tanh RNN with 2 inputs, ``forward(u, h) -> h_next``, saved as TorchScript."""
    import torch

    class TanhRNN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(3)
            self.W = torch.nn.Parameter(1.2 * torch.randn(8, 8, generator=generator) / 8**0.5)
            self.B = torch.nn.Parameter(torch.randn(8, 2, generator=generator))
            self.b = torch.nn.Parameter(0.1 * torch.randn(8, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T + self.b)

    path = tmp_path_factory.mktemp("models") / "tanh_rnn.pt"
    torch.jit.script(TanhRNN()).save(str(path))
    return path


@pytest.fixture(scope="session")
def tanh_model(live_service: LiveService, tanh_rnn_path: Path) -> dict[str, Any]:
    """The tanh RNN uploaded and validated (status ready)."""
    model = live_service.upload_model(tanh_rnn_path)
    assert model["status"] == "ready", model
    return model


@pytest.fixture
def slow_job(live_service: LiveService, tanh_model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A job that runs for several seconds, seen running; cancelled afterwards if still going."""
    with live_service.client() as http:
        response = http.post(
            "/v1/jobs",
            json={"model_id": tanh_model["id"], "initial_states": random_states(1024), "options": SLOW_OPTIONS},
        )
        assert response.status_code == 202, response.text
        job = live_service.wait_status(response.json()["id"], {"running", "succeeded", "failed", "cancelled"})
        assert job["status"] == "running", job
        yield job
        http.post(f"/v1/jobs/{job['id']}/cancel")
