"""What a client sees of the gateway during faults: Redis killed and frozen, and a large JSON body.

``outages``: a gateway and one worker (the integration-test harness) on a Redis of their own
(append-only, fsync always), with the default outage settings. For each fault (SIGKILL, SIGSTOP),
``--trials`` times: the time and status of a job read, a submission, ``/readyz`` and ``/healthz``
during the outage; then, once Redis is back, the time until ``/readyz`` answers 200 and until a new
job has succeeded. It checks that the job from before every outage is still there.

``body``: a gateway alone (the Redis at 127.0.0.1:6379, database 11; no worker) receives a JSON
``POST /v1/jobs`` of ``--rows`` x 64 states for a model that does not exist (404 once parsed), while
another client polls ``/healthz`` every 50 ms: the POST's time, ``/healthz`` latency (median, p95,
max), and the gateway's peak and final RSS. ``--repo`` runs another checkout's gateway (an older
commit, for a before/after comparison).

Run from the repository root: ``.venv/bin/python benchmarks/gateway_faults.py outages [--trials 3]``,
``.venv/bin/python benchmarks/gateway_faults.py body [--rows 130000] [--repo PATH --app MODULE:FACTORY]``
(about a minute each).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "support")]

from private_redis import PrivateRedis  # noqa: E402  (the fault suite's own Redis)
from service_harness import free_port, start_service  # noqa: E402  (the integration-test harness)

#: uvicorn with ``service`` and ``fpf_client`` imported from ``repo``: the editable install of this
#: checkout would otherwise lend its modules to another checkout's ``service`` package.
_UVICORN_FROM = (
    "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in repr(f)]; "
    "sys.path[:0] = [{repo!r}, {repo!r} + '/client']; from uvicorn.main import main; main()"
)


def _job(model_id: str, seed: int) -> dict[str, Any]:
    return {"model_id": model_id, "initial_states": np.random.default_rng(seed).uniform(-1, 1, (64, 16)).tolist()}


def outages(trials: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = PrivateRedis(Path(tmp))
        redis.start()
        try:
            with (
                start_service(Path(tmp), FPF_REDIS_URL=redis.url) as service,
                httpx.Client(base_url=service.url, timeout=60) as http,
            ):
                model = service.upload_model(REPO / "tests" / "data" / "flipflop_tanh.pt", timeout_s=120)
                before = http.post("/v1/jobs", json=_job(model["id"], 0)).json()
                service.wait_job(before["id"])
                calls: dict[str, Callable[[], httpx.Response]] = {
                    "GET job": lambda: http.get(f"/v1/jobs/{before['id']}"),
                    "POST job": lambda: http.post("/v1/jobs", json=_job(model["id"], 1)),
                    "readyz": lambda: http.get("/readyz"),
                    "healthz": lambda: http.get("/healthz"),
                }
                for fault, undo in (("kill", redis.start), ("freeze", redis.thaw)):
                    seen: dict[str, list[tuple[float, int]]] = {name: [] for name in calls}
                    for trial in range(trials):
                        getattr(redis, fault)()
                        for name, call in calls.items():
                            started = time.monotonic()
                            status = call().status_code
                            seen[name].append((time.monotonic() - started, status))
                        undo()
                        back = time.monotonic()
                        while http.get("/readyz").status_code != 200:
                            time.sleep(0.05)
                        ready_s = time.monotonic() - back
                        job = http.post("/v1/jobs", json=_job(model["id"], 2 + trial)).json()
                        assert service.wait_job(job["id"])["status"] == "succeeded"
                        print(
                            f"{fault} {trial}: /readyz 200 {ready_s:.2f} s after Redis was back; "
                            f"a new job succeeded {time.monotonic() - back:.2f} s after",
                            flush=True,
                        )
                    for name, answers in seen.items():
                        times = [t for t, _ in answers]
                        print(
                            f"{fault}: {name}: {sorted({s for _, s in answers})} in median "
                            f"{statistics.median(times):.2f} s, max {max(times):.2f} s",
                            flush=True,
                        )
                assert http.get(f"/v1/jobs/{before['id']}").json()["status"] == "succeeded"
        finally:
            redis.stop()


def body(rows: int, repo: Path, app: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {
            **os.environ,
            "FPF_REDIS_URL": "redis://127.0.0.1:6379/11",
            "FPF_REDIS_PREFIX": f"fpfbench{port}",
            "FPF_DATA_DIR": f"{tmp}/data",
            "FPF_KEYS_FILE": f"{tmp}/keys.json",
            "FPF_MAX_BODY_BYTES": str(256 * 2**20),
        }
        gateway = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _UVICORN_FROM.format(repo=str(repo.resolve())),
                "--factory",
                app,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            cwd=repo,
            env=env,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            states = np.random.default_rng(0).normal(size=(rows, 64)).tolist()
            payload = json.dumps({"model_id": "0" * 64, "initial_states": states}).encode()
            del states
            process = psutil.Process(gateway.pid)
            answers: list[tuple[int, float]] = []

            def post() -> None:
                started = time.monotonic()
                response = httpx.post(
                    f"{url}/v1/jobs", content=payload, timeout=600, headers={"Content-Type": "application/json"}
                )
                answers.append((response.status_code, time.monotonic() - started))

            posting = threading.Thread(target=post)
            posting.start()
            latencies, peak = [], 0
            while posting.is_alive():
                started = time.monotonic()
                httpx.get(f"{url}/healthz", timeout=120)
                latencies.append(time.monotonic() - started)
                peak = max(peak, process.memory_info().rss)
                time.sleep(0.05)
            posting.join()
            time.sleep(2)
            ms = np.array(latencies) * 1000
            print(
                f"body {len(payload) / 1e6:.0f} MB: POST {answers[0][0]} in {answers[0][1]:.1f} s; /healthz "
                f"median {np.median(ms):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, max {ms.max():.0f} ms "
                f"({len(ms)} polls); gateway RSS peak {peak / 2**20:.0f} MB, "
                f"after {process.memory_info().rss / 2**20:.0f} MB"
            )
        finally:
            os.killpg(gateway.pid, signal.SIGTERM)
            gateway.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("outages").add_argument("--trials", type=int, default=3)
    body_args = commands.add_parser("body")
    body_args.add_argument("--rows", type=int, default=130_000)
    body_args.add_argument("--repo", type=Path, default=REPO, help="checkout whose gateway runs (default: this one)")
    body_args.add_argument(
        "--app",
        default="service.gateway.app:create_app",
        help="the gateway's app factory in that checkout (default: %(default)s)",
    )
    args = parser.parse_args()
    if args.command == "outages":
        outages(args.trials)
    else:
        body(args.rows, args.repo, args.app)


if __name__ == "__main__":
    main()
