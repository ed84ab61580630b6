"""A taken port: each server command says so in one line naming the flag to change, and exits 1 at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from service_harness import REPO

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port held by a gRPC server with gRPC's defaults (SO_REUSEPORT, as another fpf's gRPC part has)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0)


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "FPF_REDIS_URL": "redis://127.0.0.1:6379/11",
        "FPF_DATA_DIR": str(tmp_path / "data"),
        "FPF_KEYS_FILE": str(tmp_path / "keys.json"),
    }
    return subprocess.run(
        [sys.executable, "-m", "service.ops.cli", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "command, flag",
    [
        (["grpc", "--port"], "--port"),
        (["gateway", "--port"], "--port"),
        (["up", "--port", "{free}", "--data-dir", "{tmp}", "--grpc-port"], "--grpc-port"),
        (["up", "--grpc-port", "0", "--data-dir", "{tmp}", "--port"], "--port"),
    ],
)
def test_a_taken_port_is_named_with_its_flag_in_one_line(
    tmp_path: Path, taken_port: int, command: list[str], flag: str
) -> None:
    argv = [part.format(free=_free_port(), tmp=tmp_path / "var") for part in command] + [str(taken_port)]
    finished = _run(tmp_path, *argv)
    assert finished.returncode == 1, finished.stderr
    errors = [line for line in finished.stderr.splitlines() if " ERROR " in line or "Traceback" in line]
    assert len(errors) == 1, finished.stderr
    assert f"{taken_port}" in errors[0] and "in use" in errors[0] and flag in errors[0], errors[0]
