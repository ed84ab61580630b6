"""``fpf-server up`` as a user runs it: real Redis, worker and gateway processes, real HTTP.

Every launcher runs on a free port with its own temporary data directory; every process it
started is remembered by (pid, start time) and checked (or killed) by pid afterwards.
"""

from __future__ import annotations

import fcntl
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import psutil
import pytest
import redis
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fpf_client import FixedPoints
from service.ops.embedded_redis import free_port, redis_server_executable

pytestmark = pytest.mark.integration

READY_WITHIN_S = 120.0
STOP_WITHIN_S = 60.0
EXTERNAL_REDIS = "redis://127.0.0.1:6379/13"


@dataclass
class Launched:
    """A running ``fpf-server up`` and every process seen under it."""

    process: subprocess.Popen[bytes]
    base_url: str
    grpc_port: int
    data_dir: Path
    log: Path
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time

    def remember_descendants(self) -> list[psutil.Process]:
        children = psutil.Process(self.process.pid).children(recursive=True)
        for child in children:
            try:
                self.seen[child.pid] = child.create_time()
            except psutil.NoSuchProcess:
                pass
        return children

    def survivors(self) -> list[int]:
        """Remembered processes that still run (same pid and start time, not a zombie)."""
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def pid_of(self, part: str) -> int:
        return int((self.data_dir / "run" / f"{part}.pid").read_text())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(f"{self.base_url}{path}", timeout=10, **kwargs)


def _wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, launched: Launched) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except (httpx.HTTPError, grpc.RpcError):
            pass
        if launched.process.poll() is not None:
            raise AssertionError(
                f"fpf-server exited ({launched.process.returncode}) waiting for {what}:\n{launched.output()[-4000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}:\n{launched.output()[-4000:]}")
        time.sleep(0.2)


def _launch(tmp: Path, **env_overrides: str) -> Launched:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPF_")}
    env.update(OMP_NUM_THREADS="1", FPF_WORKER_TORCH_THREADS="1", PYTHONUNBUFFERED="1", **env_overrides)
    port, grpc_port = free_port(), free_port()
    data_dir = tmp / "var"
    log = tmp / "fpf-server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.ops.cli",
                "up",
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--data-dir",
                str(data_dir),
                "--grace",
                "15",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    launched = Launched(process, f"http://127.0.0.1:{port}", grpc_port, data_dir, log)
    _wait_for(lambda: launched.get("/readyz").status_code == 200, READY_WITHIN_S, "/readyz 200", launched)
    launched.remember_descendants()
    return launched


def _stop(launched: Launched, sig: signal.Signals) -> int:
    launched.remember_descendants()
    launched.process.send_signal(sig)
    return launched.process.wait(timeout=STOP_WITHIN_S)


def _clean_up(launched: Launched) -> None:
    """Whatever a failed test left running: the launcher, then every process seen under it."""
    if launched.process.poll() is None:
        launched.process.terminate()
        try:
            launched.process.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            launched.process.kill()
            launched.process.wait()
    for pid in launched.survivors():
        os.kill(pid, signal.SIGKILL)


def _redis_children(launched: Launched) -> list[psutil.Process]:
    return [p for p in launched.remember_descendants() if p.exe() == redis_server_executable()]


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> Iterator[Launched]:
    launched = _launch(tmp_path_factory.mktemp("launcher"))
    yield launched
    _clean_up(launched)


def test_up_starts_embedded_redis_worker_and_gateway_and_says_where(service):
    assert len(_redis_children(service)) == 1
    for part in ("redis", "worker-1", "gateway", "grpc"):
        assert psutil.pid_exists(service.pid_of(part)), part
    out = service.output()
    assert f"API:      {service.base_url}" in out
    assert f"Docs:     {service.base_url}/docs" in out
    assert f"Data dir: {service.data_dir.resolve()}" in out
    assert "(embedded)" in out
    assert [name.split("@")[0] for name in service.get("/readyz").json()["workers"]] == ["worker1"]
    assert (service.data_dir / "redis" / "appendonly.aof").exists()
    assert f"127.0.0.1:{service.grpc_port}" in out

    def grpc_serving() -> bool:
        with grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    _wait_for(grpc_serving, 30.0, "gRPC health SERVING", service)


def _tanh_rnn_torchscript(n_states: int, n_inputs: int) -> bytes:
    """h' = tanh(W h + B u) with |W| < 1: at u = 0 its only fixed point is h = 0."""

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            q, _ = torch.linalg.qr(torch.randn(n_states, n_states, generator=generator))
            self.W = torch.nn.Parameter(0.6 * q)
            self.B = torch.nn.Parameter(torch.randn(n_states, n_inputs, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T)

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Step()), buffer)
    return buffer.getvalue()


def test_up_runs_a_job_end_to_end_over_http(service):
    n_states, n_inputs = 4, 2
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        upload = http.post(
            "/v1/models",
            files={"file": ("rnn.pt", _tanh_rnn_torchscript(n_states, n_inputs))},
            data={"n_states": str(n_states), "n_inputs": str(n_inputs)},
        )
        assert upload.status_code in (200, 202), upload.text
        model_id = upload.json()["id"]
        _wait_for(
            lambda: http.get(f"/v1/models/{model_id}").json()["status"] != "validating",
            60,
            "the model to be validated",
            service,
        )
        model = http.get(f"/v1/models/{model_id}").json()
        assert model["status"] == "ready", model

        initial_states = np.random.default_rng(0).uniform(-1, 1, size=(8, n_states))
        submit = http.post(
            "/v1/jobs",
            json={"model_id": model_id, "initial_states": initial_states.tolist(), "inputs": [[0.0] * n_inputs]},
        )
        assert submit.status_code == 202, submit.text
        job_id = submit.json()["id"]
        final = {"succeeded", "failed", "cancelled"}
        _wait_for(lambda: http.get(f"/v1/jobs/{job_id}").json()["status"] in final, 120, "the job", service)
        job = http.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job

        result = http.get(f"/v1/jobs/{job_id}/result")
        assert result.status_code == 200, result.text
        fps = FixedPoints.from_json_dict(result.json())
    assert len(fps) >= 1
    np.testing.assert_allclose(fps.xstar, 0.0, atol=1e-6)


def test_a_killed_worker_is_restarted_while_the_gateway_stays_up(service):
    killed = service.pid_of("worker-1")
    os.kill(killed, signal.SIGKILL)
    health_codes: list[int] = []

    def recovered() -> bool:
        health_codes.append(service.get("/healthz").status_code)
        pid_file = service.data_dir / "run" / "worker-1.pid"
        restarted = pid_file.exists() and pid_file.read_text().strip() not in ("", str(killed))
        return restarted and service.get("/readyz").status_code == 200

    _wait_for(recovered, READY_WITHIN_S, "the worker to be restarted and /readyz to recover", service)
    assert health_codes and set(health_codes) == {200}
    assert "worker-1 exited with signal SIGKILL" in service.output()
    service.remember_descendants()


def test_sigint_stops_every_part_and_leaves_no_process(tmp_path):
    launched = _launch(tmp_path)
    try:
        parts = {part: launched.pid_of(part) for part in ("redis", "worker-1", "gateway")}
        assert len(launched.remember_descendants()) >= 4, "redis, worker and its pool process, gateway"
        assert _stop(launched, signal.SIGINT) == 0
        assert launched.survivors() == []
        assert not any(psutil.pid_exists(pid) for pid in parts.values())
        assert sorted(p.name for p in (launched.data_dir / "run").iterdir()) == ["fpf-server.lock"]
        out = launched.output()
        assert out.index("stopped worker-1, gateway") < out.index("stopped redis"), "Redis stops last"
    finally:
        _clean_up(launched)


def test_with_fpf_redis_url_it_uses_that_redis_and_starts_none(tmp_path):
    prefix = f"fpf-test-launcher-{uuid.uuid4().hex[:8]}"
    external = redis.Redis.from_url(EXTERNAL_REDIS)
    launched = _launch(tmp_path, FPF_REDIS_URL=EXTERNAL_REDIS, FPF_REDIS_PREFIX=prefix)
    try:
        assert _redis_children(launched) == []
        assert not (launched.data_dir / "run" / "redis.pid").exists()
        assert f"Redis:    {EXTERNAL_REDIS} (external)" in launched.output()
        assert "worker1" in [name.split("@")[0] for name in launched.get("/readyz").json()["workers"]]
        assert any(key.startswith(prefix.encode()) for key in external.scan_iter(match=f"{prefix}*"))
        assert _stop(launched, signal.SIGTERM) == 0
        assert launched.survivors() == []
    finally:
        _clean_up(launched)
        for key in external.scan_iter(match=f"{prefix}*"):
            external.delete(key)
        external.close()


def test_up_refuses_a_taken_port_and_a_data_dir_in_use(tmp_path):
    def up(port: int, data_dir: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "service.ops.cli",
                "up",
                "--port",
                str(port),
                "--grpc-port",
                "0",
                "--data-dir",
                str(data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        refused = up(taken.getsockname()[1], tmp_path / "a")
    assert refused.returncode == 1 and "is in use" in refused.stderr

    run_dir = tmp_path / "b" / "run"
    run_dir.mkdir(parents=True)
    with open(run_dir / "fpf-server.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        refused = up(free_port(), tmp_path / "b")
    assert refused.returncode == 1 and "already running" in refused.stderr
    assert not (tmp_path / "b" / "redis" / "appendonly.aof").exists(), "no Redis was started"
