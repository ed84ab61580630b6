"""A ``redis-server`` of a test's own, which it may kill, freeze and restart (never the shared one at 6379)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from service_harness import free_port

from service.ops.embedded_redis import redis_server_argv, wait_until_ready


class PrivateRedis:
    """A ``redis-server`` child on a free loopback port, as ``fpf-server up`` runs it, with its
    append-only file synced on every write (so a SIGKILL loses nothing acknowledged).

    Started again with :meth:`start`, it comes back on the same port and files.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) and wait until this process answers PING."""
        argv = [*redis_server_argv(self.directory, self.port), "--appendfsync", "always"]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if not wait_until_ready(self.url, timeout_s, pid=self.process.pid):
            raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: gone at once, no chance to write anything more."""
        if self.process is not None and self.process.poll() is None:
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
        """Thaw if frozen, then kill; for teardown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.kill()
