"""``fpf-server up``: the whole service on one machine, with nothing else installed.

Starts an embedded Redis (unless ``FPF_REDIS_URL`` names one), Celery workers and the
gateway, each as its own supervised process (see :mod:`service.ops.supervisor`), and stops
them all on SIGINT/SIGTERM: gateway and workers first, Redis last.

Layout of the data directory::

    <data-dir>/data/    models, job arrays and results (FPF_DATA_DIR of the children)
    <data-dir>/redis/   the embedded Redis's append-only file
    <data-dir>/run/     pid files of the running parts and the launcher's lock
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.ops import embedded_redis
from service.ops.supervisor import ProcessSpec, Supervisor

log = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0


class LaunchError(RuntimeError):
    """The service cannot be started as asked (port taken, data dir in use, Redis not starting)."""


@dataclass(frozen=True)
class LaunchConfig:
    """What ``fpf-server up`` was asked for.

    Attributes
    ----------
    host, port
        Where the gateway listens.
    data_dir
        Root of everything the service writes (see the module docstring).
    workers
        Number of Celery worker processes (each with concurrency 1).
    redis_url
        An external Redis to use; None starts the embedded one.
    grace_s
        How long each part may take to stop before it is killed.
    log_level
        Passed on to the gateway and workers.
    grpc_port
        Where the gRPC server listens, on the gateway's host; None runs none.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    workers: int = 1
    redis_url: str | None = None
    grace_s: float = 10.0
    log_level: str = "info"
    grpc_port: int | None = 50051

    @property
    def base_url(self) -> str:
        """The gateway's URL as a client on this machine reaches it."""
        return f"http://{self._local_host()}:{self.port}"

    @property
    def grpc_url(self) -> str | None:
        """The gRPC server's address as a client on this machine reaches it (None when not served)."""
        return None if self.grpc_port is None else f"grpc://{self._local_host()}:{self.grpc_port}"

    def _local_host(self) -> str:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host


def child_environment(base: Mapping[str, str], *, redis_url: str, data_dir: Path, workers: int) -> dict[str, str]:
    """The environment of the gateway and worker processes.

    They get the Redis URL and artifact directory chosen by the launcher, unbuffered output,
    and (unless ``FPF_WORKER_TORCH_THREADS`` is set) an even share of the CPU cores per worker,
    since several single-process workers would otherwise each use every core.
    """
    env = dict(base)
    env["FPF_REDIS_URL"] = redis_url
    env["FPF_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("FPF_WORKER_TORCH_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, workers))))
    return env


def service_specs(config: LaunchConfig, env: Mapping[str, str]) -> list[ProcessSpec]:
    """The worker and gateway processes, run through this same CLI as docker-compose runs them."""
    cli = [sys.executable, "-m", "service.ops.cli", "--log-level", config.log_level]
    specs = [
        ProcessSpec(f"worker-{i}", [*cli, "worker", "--name", f"worker{i}"], env, tier=1)
        for i in range(1, config.workers + 1)
    ]
    specs.append(
        ProcessSpec("gateway", [*cli, "gateway", "--host", config.host, "--port", str(config.port)], env, tier=1)
    )
    if config.grpc_port is not None:
        specs.append(
            ProcessSpec("grpc", [*cli, "grpc", "--host", config.host, "--port", str(config.grpc_port)], env, tier=1)
        )
    return specs


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the data directory, so two launchers never share one Redis file."""
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as busy:
            data_dir = lock_path.parent.parent
            raise LaunchError(f"another fpf-server is already running with data dir {data_dir}") from busy
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _StopSignals:
    """Turn SIGINT/SIGTERM/SIGHUP into a stop request; a second signal asks to kill at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.force = threading.Event()
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, _frame: object) -> None:
        if self.stop.is_set():
            self.force.set()
        else:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stop.set()

    def __enter__(self) -> _StopSignals:
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _gateway_healthy(base_url: str) -> bool:
    """Whether the gateway answers ``/healthz`` with 200."""
    try:
        return httpx.get(f"{base_url}/healthz", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def banner(config: LaunchConfig, data_dir: Path, redis_url: str, embedded: bool) -> str:
    """The lines that tell a person where the running service is."""
    redis_note = "embedded" if embedded else "external"
    return "\n".join(
        [
            "fpf is running",
            f"  Web:      {config.base_url}/",
            f"  API:      {config.base_url}",
            f"  Docs:     {config.base_url}/docs",
            *([f"  gRPC:     {config.grpc_url}"] if config.grpc_url else []),
            f"  Data dir: {data_dir}",
            f"  Redis:    {redis_url} ({redis_note})",
            f"  Workers:  {config.workers}",
            "Press Ctrl-C to stop.",
        ]
    )


def _print_now(text: str) -> None:
    print(text, flush=True)


def up(config: LaunchConfig, *, announce: Callable[[str], None] = _print_now) -> int:
    """Run the service until SIGINT/SIGTERM; returns the process exit code.

    Raises
    ------
    LaunchError
        When the gateway port is taken, the data directory is used by another launcher,
        or the embedded Redis does not start.
    """
    root = config.data_dir.resolve()
    artifacts, redis_dir, run_dir = root / "data", root / "redis", root / "run"
    for directory in (artifacts, redis_dir, run_dir):
        directory.mkdir(parents=True, exist_ok=True)
    if not port_is_free(config.host, config.port):
        raise LaunchError(f"port {config.port} on {config.host} is in use; choose another with --port")
    if config.grpc_port is not None and not port_is_free(config.host, config.grpc_port):
        raise LaunchError(
            f"gRPC port {config.grpc_port} on {config.host} is in use; choose another with "
            "--grpc-port (0 serves no gRPC)"
        )

    with _exclusive(run_dir / "fpf-server.lock"), _StopSignals() as signals:
        supervisor = Supervisor(run_dir, grace_s=config.grace_s)
        try:
            redis_url = config.redis_url or _start_embedded_redis(supervisor, redis_dir)
            env = child_environment(os.environ, redis_url=redis_url, data_dir=artifacts, workers=config.workers)
            for spec in service_specs(config, env):
                supervisor.start(spec)
            announced = False
            while not signals.stop.wait(0.2):
                supervisor.poll()
                if not announced and _gateway_healthy(config.base_url):
                    announce(banner(config, root, redis_url, embedded=config.redis_url is None))
                    announced = True
        finally:
            supervisor.stop_all(force=signals.force.is_set)
    log.info("fpf stopped")
    return 0


def _start_embedded_redis(supervisor: Supervisor, redis_dir: Path) -> str:
    """Start the embedded Redis on a free loopback port and wait until it answers; returns its URL."""
    port = embedded_redis.free_port()
    server = supervisor.start(ProcessSpec("redis", embedded_redis.redis_server_argv(redis_dir, port), tier=0))
    url = f"redis://127.0.0.1:{port}/0"
    if not embedded_redis.wait_until_ready(url, REDIS_START_TIMEOUT_S, pid=server.pid):
        raise LaunchError(f"the embedded Redis did not answer on port {port} within {REDIS_START_TIMEOUT_S:.0f} s")
    log.info("embedded Redis ready at %s (files in %s)", url, redis_dir)
    return url
