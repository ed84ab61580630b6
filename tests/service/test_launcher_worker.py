"""``fpf-server worker --gpu N`` and the embedded Redis, as real processes.

The worker command must become the documented Celery worker, pinned to its GPU through
CUDA_VISIBLE_DEVICES, with torch (and so CUDA) loaded only in the forked pool process,
never in the parent that forks it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis

from service.ops.cli import build_parser
from service.ops.embedded_redis import free_port, redis_server_argv, wait_until_ready

pytestmark = pytest.mark.integration

EXTERNAL_REDIS = "redis://127.0.0.1:6379/13"


def _torch_loaded(pid: int) -> bool:
    """Whether libtorch is mapped into the process."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _pool_process(parent: psutil.Process) -> psutil.Process | None:
    """The child of ``parent`` that has loaded torch (the pool process), if one has yet; other children
    (the sandbox probe at start) come and go while we look."""
    for child in parent.children():
        try:
            if _torch_loaded(child.pid):
                return child
        except OSError:  # it exited after it was listed
            continue
    return None


def test_worker_execs_a_celery_worker_pinned_to_its_gpu_with_torch_only_in_the_pool(tmp_path):
    prefix = f"fpf-test-worker-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FPF_") and k != "CUDA_VISIBLE_DEVICES"}
    env.update(
        FPF_REDIS_URL=EXTERNAL_REDIS,
        FPF_REDIS_PREFIX=prefix,
        FPF_DATA_DIR=str(tmp_path),
        FPF_WORKER_TORCH_THREADS="1",
        OMP_NUM_THREADS="1",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "service.ops.cli", "worker", "--gpu", "3"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    parent = psutil.Process(worker.pid)
    try:
        deadline = time.monotonic() + 120
        while (pool := _pool_process(parent)) is None:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            assert time.monotonic() < deadline, "the pool process did not load torch within 120 s"
            time.sleep(0.2)
        cmdline = " ".join(parent.cmdline())  # same pid: the CLI replaced itself with Celery
        assert "-m celery -A workers.celery_app:app worker -Q gpu --pool prefork --concurrency 1 -E" in cmdline
        assert "-n gpu3@%h" in cmdline
        assert parent.environ()["CUDA_VISIBLE_DEVICES"] == "3"
        assert pool.environ()["CUDA_VISIBLE_DEVICES"] == "3"
        assert not _torch_loaded(worker.pid), "the parent of the pool must never load torch"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        client = redis.Redis.from_url(EXTERNAL_REDIS)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()


def test_embedded_redis_persists_to_its_append_only_file(tmp_path):
    port = free_port()
    server = subprocess.Popen(redis_server_argv(tmp_path, port), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        assert wait_until_ready(url, 10, pid=server.pid)
        assert not wait_until_ready(url, 0.2, pid=server.pid + 1), "another process's Redis must not count"
        client = redis.Redis.from_url(url)
        client.set("fpf:probe", "kept")
        client.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert b"fpf:probe" in (tmp_path / "appendonly.aof").read_bytes()


@pytest.mark.parametrize("argv", [["up", "--workers", "0"], ["worker", "--gpu", "x"], ["up", "--bogus"]])
def test_cli_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2
