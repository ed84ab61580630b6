"""Helpers of the fault suite: a Redis that tests may kill, freeze and restart, and the settings the
service under fault runs with."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from service_harness import free_port

from service.ops.embedded_redis import redis_server_executable

#: The outage timeouts the fault service runs with (seconds); tests bound their waits by them.
FAULT_SETTINGS = {
    "FPF_REDIS_CONNECT_TIMEOUT_S": "1",
    "FPF_REDIS_SOCKET_TIMEOUT_S": "1",
    "FPF_READYZ_TIMEOUT_S": "3",
    "FPF_UNAVAILABLE_RETRY_AFTER_S": "2",
    # Staged files of an upload cut short are swept at the first janitor pass after this age.
    "FPF_ORPHAN_AFTER_S": "1",
    # Room for a body that takes the old gateway seconds to parse on its event loop.
    "FPF_MAX_BODY_BYTES": str(64 * 2**20),
}


class PrivateRedis:
    """A ``redis-server`` child on a free loopback port, with an fsync-always append-only file in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Start (or restart, on the same port and files) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                redis_server_executable(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: gone at once, no chance to write anything more."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and new ones are accepted by the kernel, but nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
