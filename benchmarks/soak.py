"""Soak test: mixed jobs against a real ``fpf-server up`` while workers and Redis are killed at random.

Runs the whole service (embedded Redis, ``--workers`` Celery workers, the gateway) under its own
supervisor in a temporary directory, keeps ``--clients`` threads submitting flip-flop jobs (tanh,
GRU and LSTM models; Newton and Adam; 32 to 512 initial states) and waiting for their results with
the Python client, and SIGKILLs a worker or Redis every ``--fault-every`` seconds on average (the
supervisor restarts what died). At the end it stops submitting, lets the jobs in flight finish, and
prints jobs completed, failed (by code), lost (submitted, never finished: must be 0), the latency from
submission to result (p50, p95) and each part's resident memory (first and last sample, growth).

Not run in CI: an hour is the intended length.

    python benchmarks/soak.py --duration 3600 --workers 2 --clients 4 --fault-every 60
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from importlib.resources import as_file, files
from pathlib import Path

import httpx
import numpy as np
import psutil

from fpf_client import Client, FpfError

REPO = Path(__file__).resolve().parents[1]
#: The parts whose memory is followed, by their supervisor pid file.
PARTS = ("gateway", "redis", "worker-1", "worker-2", "worker-3", "worker-4")
CELLS = ("tanh", "gru", "lstm")
#: (method, initial states, options): quick Newton searches and longer Adam ones.
MIX = (
    ("auto", 32, {}),
    ("auto", 256, {}),
    ("adam", 128, {"max_iters": 2000, "adam": {"lr_init": 0.05}}),
    ("auto", 512, {"completeness": "none"}),
)


@dataclass
class Tally:
    """What the clients saw, shared between their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    submitted: list[str] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)  #: latency of each, in seconds
    failed: Counter = field(default_factory=Counter)  #: by error code
    client_errors: Counter = field(default_factory=Counter)  #: calls that raised (outage longer than the retries)
    finished: set[str] = field(default_factory=set)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(root: Path, port: int, workers: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("FPF_REDIS_URL", None)
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.ops.cli",
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(root),
                "--workers",
                str(workers),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"fpf-server up exited; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the service was not ready in 300 s; see {log_path}")


def part_pid(root: Path, part: str) -> int | None:
    try:
        return int((root / "run" / f"{part}.pid").read_text())
    except (OSError, ValueError):
        return None


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and everything below it (a worker's pool and sandboxes)."""
    try:
        process = psutil.Process(pid)
        return sum(p.memory_info().rss for p in (process, *process.children(recursive=True)))
    except psutil.Error:
        return 0


def upload_models(client: Client) -> dict[str, tuple[str, np.ndarray]]:
    """Each flip-flop model shipped with the client, ready, with states sampled from its recording."""
    models = {}
    for cell in CELLS:
        with as_file(files("fpf_client") / "data" / f"flipflop_{cell}.pt") as path:
            model = client.upload_model(path, timeout=300)
        with as_file(files("fpf_client") / "data" / f"flipflop_{cell}.npz") as path, np.load(path) as data:
            states = data["states"].reshape(-1, data["states"].shape[-1])
        models[cell] = (model.id, states)
    return models


def client_loop(
    url: str, models: dict[str, tuple[str, np.ndarray]], tally: Tally, stop: threading.Event, seed: int
) -> None:
    rng = random.Random(seed)
    with Client(url, retry_timeout=300) as client:
        while not stop.is_set():
            cell = rng.choice(CELLS)
            model_id, states = models[cell]
            method, n, options = rng.choice(MIX)
            rows = np.random.default_rng(rng.randrange(2**31)).choice(len(states), n)
            start = time.monotonic()
            try:
                job = client.submit(model_id, states[rows], np.zeros((1, 3)), method=method, **options)
                with tally.lock:
                    tally.submitted.append(job.id)
                record = job.wait(progress=False, timeout=900)
                if record.status == "succeeded":
                    job.result()
                    with tally.lock:
                        tally.completed.append(time.monotonic() - start)
                else:
                    with tally.lock:
                        tally.failed[(record.error or {}).get("code", record.status)] += 1
                with tally.lock:
                    tally.finished.add(job.id)
            except FpfError as exc:
                with tally.lock:
                    tally.client_errors[exc.code.value] += 1
            except TimeoutError:
                with tally.lock:
                    tally.client_errors["timeout"] += 1


def fault_loop(
    root: Path, workers: int, mean_s: float, stop: threading.Event, kills: Counter, killed_at: list[float], seed: int
) -> None:
    rng = random.Random(seed)
    targets = ["redis", *(f"worker-{i}" for i in range(1, workers + 1))]
    while not stop.wait(rng.expovariate(1.0 / mean_s)):
        part = rng.choice(targets)
        pid = part_pid(root, part)
        if pid is None:
            continue
        try:
            os.killpg(pid, signal.SIGKILL) if part.startswith("worker") else os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        kills[part.split("-")[0]] += 1
        if part.startswith("worker"):
            killed_at.append(time.time())
        logging.info("killed %s (pid %d)", part, pid)


def requeue_delays(log_path: Path, killed_at: list[float]) -> list[float]:
    """Seconds from each worker kill to the janitor's first re-queue of a job lost with it (kills of an
    idle worker lose no job and are left out)."""
    lost = []
    for line in log_path.read_text(errors="replace").splitlines():
        if "lost during attempt" in line:
            try:
                lost.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
            except ValueError:
                continue
    delays = []
    for i, kill in enumerate(killed_at):
        following = killed_at[i + 1] if i + 1 < len(killed_at) else float("inf")
        after = [t - kill for t in lost if kill <= t < following]
        if after:
            delays.append(min(after))
    return delays


def memory_loop(root: Path, samples: dict[str, list[int]], stop: threading.Event, every_s: float) -> None:
    while True:
        for part in PARTS:
            pid = part_pid(root, part)
            if pid is not None and (rss := rss_bytes(pid)):
                samples.setdefault(part, []).append(rss)
        if stop.wait(every_s):
            return


def lost_jobs(url: str, tally: Tally) -> list[str]:
    """Submitted jobs that never reached a final status (or whose record vanished)."""
    lost = []
    with Client(url, retry_timeout=60) as client:
        for job_id in set(tally.submitted) - tally.finished:
            try:
                record = client.get_job(job_id).wait(progress=False, timeout=300)
                if not record.is_final:
                    lost.append(job_id)
            except (FpfError, TimeoutError):
                lost.append(job_id)
    return lost


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3600.0, help="seconds of load (default 3600)")
    parser.add_argument("--workers", type=int, default=2, choices=range(1, 5))
    parser.add_argument("--clients", type=int, default=4, help="threads submitting and waiting")
    parser.add_argument("--fault-every", type=float, default=60.0, help="mean seconds between kills")
    parser.add_argument("--memory-every", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the data directory and logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("fpf_client").setLevel(logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    root = Path(tempfile.mkdtemp(prefix="fpf-soak-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = start_service(root, port, args.workers, root / "service.log")
    tally, kills, samples, killed_at = Tally(), Counter(), {}, []
    stop_load, stop_faults, stop_memory = threading.Event(), threading.Event(), threading.Event()
    try:
        with Client(url) as client:
            models = upload_models(client)
        threads = [
            threading.Thread(target=client_loop, args=(url, models, tally, stop_load, args.seed + i))
            for i in range(args.clients)
        ]
        threads.append(
            threading.Thread(
                target=fault_loop, args=(root, args.workers, args.fault_every, stop_faults, kills, killed_at, args.seed)
            )
        )
        threads.append(threading.Thread(target=memory_loop, args=(root, samples, stop_memory, args.memory_every)))
        for thread in threads:
            thread.start()
        started = time.monotonic()
        time.sleep(args.duration)
        stop_faults.set()
        stop_load.set()
        for thread in threads[:-1]:
            thread.join()
        drained_s = time.monotonic() - started - args.duration
        lost = lost_jobs(url, tally)
        stop_memory.set()
        threads[-1].join()
    finally:
        os.killpg(service.pid, signal.SIGINT)
        try:
            service.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)

    latencies = np.array(tally.completed) if tally.completed else np.array([np.nan])
    requeues = requeue_delays(root / "service.log", killed_at) or [float("nan")]
    report = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "duration_s": args.duration,
        "drain_s": round(drained_s, 1),
        "workers": args.workers,
        "clients": args.clients,
        "kills": dict(kills),
        "submitted": len(set(tally.submitted)),
        "completed": len(tally.completed),
        "failed": dict(tally.failed),
        "client_errors": dict(tally.client_errors),
        "lost": len(lost),
        "latency_p50_s": round(float(np.percentile(latencies, 50)), 3),
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3),
        "worker_kill_to_requeue_s": {
            "n": len(requeues),
            "median": round(float(np.median(requeues)), 1),
            "max": round(float(np.max(requeues)), 1),
        },
        "rss_mib": {
            part: {
                "first": round(s[0] / 2**20, 1),
                "last": round(s[-1] / 2**20, 1),
                "growth": round((s[-1] - s[0]) / 2**20, 1),
                "max": round(max(s) / 2**20, 1),
            }
            for part, s in samples.items()
        },
    }
    print(json.dumps(report, indent=2))
    if args.keep:
        print(f"data and logs kept in {root}", file=sys.stderr)
    else:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
