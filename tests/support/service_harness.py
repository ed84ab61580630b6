"""The harness of the integration tests: a real Celery worker and the gateway under uvicorn, as processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[2]
REDIS_DB = int(os.environ.get("FPF_TEST_REDIS_DB", "11"))
START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group this test started, then SIGKILL what is left."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def children_of(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux /proc)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


@dataclass
class LiveService:
    """Handles on the running service: its URL, environment and processes."""

    url: str
    env: dict[str, str]
    redis_url: str
    prefix: str
    data_dir: Path
    log_dir: Path
    gateway: subprocess.Popen | None = None
    #: The worker started last; ``workers`` holds every one started.
    worker: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    _workers_started: int = field(default=0)

    # --- processes ----------------------------------------------------------------------
    def start_worker(self) -> subprocess.Popen:
        """Start a Celery worker (prefork, one pool process) and wait until it answers pings."""
        self._workers_started += 1
        name = f"{self.prefix}-{self._workers_started}@%h"
        log = open(self.log_dir / f"worker-{self._workers_started}.log", "wb")
        self.worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "workers.celery_app:app",
                "worker",
                "-Q",
                "gpu",
                "--pool",
                "prefork",
                "--concurrency",
                "1",
                "-n",
                name,
                "--loglevel",
                "info",
                "--without-mingle",
                "--without-gossip",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(self.worker)
        self.wait_ready()
        return self.worker

    def start_gateway(self, port: int) -> None:
        log = open(self.log_dir / "gateway.log", "wb")
        self.gateway = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "service.gateway.app:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait for /readyz (Redis and a worker) to answer 200 and the pool process to be up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for process in (self.gateway, self.worker):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"a service process exited early; see {self.log_dir}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200 and self.pool_children():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the service was not ready within {timeout_s} s; see {self.log_dir}")

    def pool_children(self) -> list[int]:
        """PIDs of the worker's pool processes."""
        return children_of(self.worker.pid) if self.worker is not None else []

    def kill_gateway(self) -> None:
        """SIGKILL the gateway (it gets no chance to close its streams)."""
        os.killpg(self.gateway.pid, signal.SIGKILL)
        self.gateway.wait(10)

    def kill_worker(self, worker: subprocess.Popen | None = None) -> None:
        """SIGKILL a whole worker (the last started by default): its main process and its pool, no chance
        to clean up."""
        worker = worker or self.worker
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)

    def stop(self) -> None:
        for process in (self.gateway, *self.workers):
            if process is not None:
                _stop(process)

    # --- HTTP helpers -----------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def upload_model(self, path: Path, timeout_s: float = 60, **fields: Any) -> dict[str, Any]:
        """Upload a model file and wait until its validation ends; the final model record."""
        with self.client() as http:
            with open(path, "rb") as f:
                response = http.post(
                    "/v1/models", files={"file": (path.name, f)}, data={k: str(v) for k, v in fields.items()}
                )
            assert response.status_code in (200, 202), response.text
            return self.wait_model(response.json()["id"], timeout_s)

    def wait_model(self, model_id: str, timeout_s: float = 60) -> dict[str, Any]:
        return self._wait(f"/v1/models/{model_id}", {"ready", "invalid"}, timeout_s)

    def wait_job(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        return self._wait(f"/v1/jobs/{job_id}", {"succeeded", "failed", "cancelled"}, timeout_s)

    def wait_status(self, job_id: str, statuses: set[str], timeout_s: float = 60) -> dict[str, Any]:
        return self._wait(f"/v1/jobs/{job_id}", statuses, timeout_s)

    def _wait(self, path: str, statuses: set[str], timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.client() as http:
            while True:
                body = http.get(path).raise_for_status().json()
                if body["status"] in statuses:
                    return body
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{path} still {body['status']} after {timeout_s} s: {body}")
                time.sleep(0.05)


@contextmanager
def start_service(root: Path, *, redis_url: str | None = None, **settings: str) -> Iterator[LiveService]:
    """Run the gateway and one worker with their own Redis prefix and data directory under ``root``
    (on ``redis_url`` or ``FPF_REDIS_URL`` in ``settings``, by default the test database of the Redis
    on 6379); ``settings`` add or override ``FPF_*`` variables. Stopped by PID, keys deleted, on exit.

    The worker keeps no spare sandbox (``FPF_SANDBOX_SPARE=false``): a sandbox costs seconds of CPU
    to start, a test service would start one ahead at every tenant switch and leave the last unused,
    and no time limit counts a sandbox's start (tests/workers/test_sandbox_process.py tests the spare)."""
    prefix = f"fpftest-{uuid.uuid4().hex[:8]}"
    redis_url = redis_url or settings.pop("FPF_REDIS_URL", None) or f"redis://127.0.0.1:6379/{REDIS_DB}"
    port = free_port()
    env = {
        **os.environ,
        "FPF_REDIS_URL": redis_url,
        "FPF_REDIS_PREFIX": prefix,
        "FPF_DATA_DIR": str(root / "data"),
        "FPF_KEYS_FILE": str(root / "keys.json"),
        "FPF_MAX_BODY_BYTES": str(8 * 2**20),
        "FPF_HEARTBEAT_INTERVAL_S": "0.3",
        "FPF_HEARTBEAT_TTL_S": "1.5",
        "FPF_JANITOR_INTERVAL_S": "0.3",
        "FPF_SANDBOX_SPARE": "false",
        "FPF_WORKER_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }
    (root / "logs").mkdir(exist_ok=True)
    service = LiveService(
        url=f"http://127.0.0.1:{port}",
        env=env,
        redis_url=redis_url,
        prefix=prefix,
        data_dir=root / "data",
        log_dir=root / "logs",
    )
    try:
        service.start_gateway(port)
        service.start_worker()
        yield service
    finally:
        service.stop()
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        except redis.ConnectionError:
            pass  # a test's own Redis, already stopped
        finally:
            client.close()


#: Adam on 1024 states that cannot stop early (tol_q and tol_dq out of reach): minutes of steady
#: progress reports, for tests that need a running job (they cancel it). 20 000 iterations that could
#: stop early took under 2 s once the sandboxed engine ran warm.
SLOW_OPTIONS = {"method": "adam", "adam": {"lr_init": 0.01}, "max_iters": 200_000, "tol_q": 1e-30, "tol_dq": 0}


def random_states(n: int, d: int = 8, seed: int = 0) -> list[list[float]]:
    import numpy as np

    return np.random.default_rng(seed).normal(size=(n, d)).round(6).tolist()


@contextmanager
def grpc_server(service: LiveService, timeout_s: float = START_TIMEOUT_S) -> Iterator[str]:
    """An ``fpf-server grpc`` process on ``service``'s Redis and data; yields its ``host:port``."""
    port = free_port()
    target = f"127.0.0.1:{port}"
    with open(service.log_dir / "grpc.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.ops.cli", "--log-level", "warning", "grpc", "--port", str(port)],
            cwd=REPO,
            env=service.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_grpc(target, process, timeout_s)
            yield target
        finally:
            _stop(process)


def wait_for_grpc(target: str, process: subprocess.Popen, timeout_s: float = START_TIMEOUT_S) -> None:
    """Ask the gRPC server ``process`` at ``target`` for its health until it answers SERVING.

    A plain RPC, not ``grpc.channel_ready_future``: that one subscribes a connectivity-polling
    thread to the channel, which raises "Channel closed!" when the channel closes under it.
    """
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
            if process.poll() is not None:
                raise RuntimeError(f"the gRPC server at {target} exited with {process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gRPC server at {target} did not serve within {timeout_s} s")
            time.sleep(0.1)
