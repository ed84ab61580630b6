"""Hostile TorchScript models through the real service: each job ends failed or without the secret,
no file appears outside, limits stop runaway models, and the worker goes on serving.

The service here has its own small sandbox limits (1 GiB of memory, 4 CPU seconds a job) and
secrets planted where its worker can reach them: another tenant's artifact in the data
directory, a key store beside it (the layout of ``fpf-server up``) and an environment
variable. The hostile models behave during validation (small batches) and attack in the job
(a batch of 128), so that the job path is the one tested. Controls run the same models
unconfined in this process and show that they do leak and write.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from service_harness import LiveService, children_of, random_states, start_service

from fpf_client.fixed_points import FixedPoints

pytestmark = pytest.mark.integration

N_STATES = 8
ATTACK_BATCH = 128
CPU_LIMIT_S = 4


class ReadFile(torch.nn.Module):
    """F(h) = 8 bytes of a file from ``offset`` on, so the fixed point x* is those bytes."""

    def __init__(self, path: str, offset: int) -> None:
        super().__init__()
        self.path = path
        self.offset = offset

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] >= 100:
            data = torch.from_file(self.path, shared=False, size=self.offset + 8, dtype=torch.uint8)
            return h * 0.0 + data[self.offset :].to(h.dtype)
        return torch.tanh(h)


class WriteFile(torch.nn.Module):
    """Writes ``AAAAAAAA`` to a file (``from_file(shared=True)`` creates it), then behaves."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] >= 100:
            written = torch.from_file(self.path, shared=True, size=8, dtype=torch.uint8).fill_(65)
            return torch.tanh(h) + 0.0 * written[0].to(h.dtype)  # used, so the JIT keeps the write
        return torch.tanh(h)


class Allocate(torch.nn.Module):
    """Asks for 4 GiB at once."""

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] >= 100:
            return h * 0.0 + torch.ones(1073741824)[:8]
        return torch.tanh(h)


class Spin(torch.nn.Module):
    """Never returns."""

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] >= 100:
            i = 0
            while i >= 0:
                i += 1
        return torch.tanh(h)


class Tanh(torch.nn.Module):
    """A well-behaved model: one fixed point at 0."""

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(0.5 * h)


@pytest.fixture(scope="module")
def secret() -> bytes:
    return secrets.token_hex(4).encode()  # 8 bytes


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, secret: bytes) -> Iterator[LiveService]:
    """A service with small sandbox limits and planted secrets: another tenant's model file in its
    data directory, its key store (``<root>/keys.json``, beside the data directory as ``fpf-server up``
    lays it out; valid, without active keys) and ``PLANTED_SECRET`` in its worker's environment."""
    root = tmp_path_factory.mktemp("fpf-sandboxed")
    (root / "data" / "models").mkdir(parents=True)
    (root / "data" / "models" / ("cd" * 32)).write_bytes(b"another tenant's model " + secret)
    (root / "keys.json").write_text(json.dumps({"version": 1, "keys": [], "planted": secret.decode()}))
    with start_service(
        root, FPF_SANDBOX_MEMORY_BYTES=str(1 << 30), FPF_SANDBOX_CPU_S=str(CPU_LIMIT_S), PLANTED_SECRET=secret.decode()
    ) as live:
        yield live


def upload(service: LiveService, module: torch.nn.Module, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / f"{type(module).__name__}-{uuid.uuid4().hex[:6]}.pt"
    torch.jit.script(module).save(str(path))
    model = service.upload_model(path, n_states=N_STATES, n_inputs=1)
    assert model["status"] == "ready", model
    return model


def run_job(
    service: LiveService, model: dict[str, Any], n: int = ATTACK_BATCH, timeout_s: float = 120
) -> tuple[dict[str, Any], FixedPoints | None]:
    """Submit a job and wait for its end; the job and, when it succeeded, its result."""
    with service.client() as http:
        response = http.post(
            "/v1/jobs",
            json={"model_id": model["id"], "initial_states": random_states(n), "options": {"method": "auto"}},
        )
        assert response.status_code == 202, response.text
        job = service.wait_job(response.json()["id"], timeout_s=timeout_s)
        if job["status"] != "succeeded":
            return job, None
        return job, FixedPoints.load(http.get(f"/v1/jobs/{job['id']}/result?format=npz").content)


def assert_still_serving(service: LiveService, tmp_path: Path) -> None:
    with service.client() as http:
        assert http.get("/healthz").status_code == 200
    job, result = run_job(service, upload(service, Tanh(), tmp_path), n=4)
    assert job["status"] == "succeeded", job
    np.testing.assert_allclose(result.xstar, np.zeros((1, N_STATES)), atol=1e-6)


def planted_secrets(service: LiveService, secret: bytes) -> list[tuple[Path, int]]:
    """(file, offset of the secret in it): another tenant's artifact, the key store."""
    files = [service.data_dir / "models" / ("cd" * 32), Path(service.env["FPF_KEYS_FILE"])]
    return [(path, path.read_bytes().index(secret)) for path in files]


@pytest.mark.parametrize("target", [0, 1], ids=["other-tenants-artifact", "key-store"])
def test_a_model_reading_a_secret_gets_nothing(service, secret, target, tmp_path):
    path, offset = planted_secrets(service, secret)[target]
    job, result = run_job(service, upload(service, ReadFile(str(path), offset), tmp_path))

    assert secret.decode() not in str(job)
    assert job["status"] == "failed", job
    assert "No such file" in job["error"]["detail"]
    assert result is None
    assert_still_serving(service, tmp_path)


def test_control_the_reading_model_unconfined_returns_the_secret(service, secret, tmp_path):
    for target, offset in planted_secrets(service, secret):
        path = tmp_path / "model.pt"
        torch.jit.script(ReadFile(str(target), offset)).save(str(path))
        stolen = torch.jit.load(str(path))(torch.zeros(ATTACK_BATCH, 1), torch.zeros(ATTACK_BATCH, N_STATES))
        assert bytes(stolen[0].to(torch.uint8).tolist()) == secret


def test_a_model_writing_outside_leaves_no_file(service, tmp_path):
    targets = [service.data_dir / "escaped", service.data_dir / "jobs" / "escaped", tmp_path / "escaped"]
    for target in targets:
        job, _ = run_job(service, upload(service, WriteFile(str(target)), tmp_path))
        assert job["status"] == "failed", (target, job)
    assert [t for t in targets if t.exists()] == []
    assert_still_serving(service, tmp_path)


def test_control_the_writing_model_unconfined_writes(tmp_path):
    target = tmp_path / "escaped"
    torch.jit.script(WriteFile(str(target)))(torch.zeros(ATTACK_BATCH, 1), torch.zeros(ATTACK_BATCH, N_STATES))
    assert target.read_bytes() == b"A" * 8


def test_the_worker_environment_is_not_in_the_sandbox(service, secret, tmp_path):
    """Read from the host: the pool process holds the planted variable, no process of its sandboxes does."""
    upload(service, Tanh(), tmp_path)  # a sandbox has served a request
    (pool,) = service.pool_children()
    sandboxed = [pid for child in children_of(pool) for pid in _descendants(child)]

    assert secret in Path(f"/proc/{pool}/environ").read_bytes()
    assert len(sandboxed) >= 3  # bwrap, the sandbox's init, the child (and a spare's)
    assert [pid for pid in sandboxed if secret in _environ(pid)] == []


def test_a_model_allocating_past_the_memory_limit_fails_its_job(service, tmp_path):
    job, _ = run_job(service, upload(service, Allocate(), tmp_path))

    assert job["status"] == "failed", job
    assert "allocate" in job["error"]["detail"]
    assert_still_serving(service, tmp_path)


def test_a_spinning_model_is_killed_at_the_cpu_limit(service, tmp_path):
    model = upload(service, Spin(), tmp_path)
    started = time.monotonic()
    job, _ = run_job(service, model)

    assert job["status"] == "failed", job
    assert job["error"]["limit"] == "cpu_time"
    assert CPU_LIMIT_S <= time.monotonic() - started < 60
    assert_still_serving(service, tmp_path)
    (pool,) = service.pool_children()
    assert len(children_of(pool)) <= 2  # the killed sandbox is gone: the current one and a spare remain


def _descendants(pid: int) -> list[int]:
    found = [pid]
    for child in children_of(pid):
        found += _descendants(child)
    return found


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""
