"""Result transport: one large result fetched as REST ``.npz``, as a gRPC stream and as REST JSON.

Starts a gateway and a worker (the integration-test harness, against the Redis at 127.0.0.1:6379)
and a gRPC server beside them, writes a synthetic result of ``n`` fixed points with
``(n, d, d)`` float32 Jacobians into the job store (what a worker would have written), then
fetches it through :class:`fpf_client.Client` (and :class:`fpf_client.AsyncClient` over both
transports) in a fresh process per transport and reports the
wall time and the client's peak memory above its baseline (``VmHWM``), with ratios against
the ``.npz`` download. Every fetch is checked bit for bit against the written result.

Run: ``.venv/bin/python benchmarks/transport_results.py [--n 1024 --d 256] [--skip-json]``
(the JSON leg of the default size needs several GB in the gateway and in the client).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

#: Runs in a child process: fetch, check against the file, print time and peak memory as JSON.
FETCH = """
import asyncio, json, sys, time
from fpf_client import AsyncClient, Client, FixedPoints
def high_water_kib():  # VmHWM, reset at exec (ru_maxrss would carry the parent's over)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
def fetch(client, job_id, mode):
    if mode == "json":
        return FixedPoints.from_json_dict(client._http.get(f"/v1/jobs/{job_id}/result", timeout=None).json())
    return client.get_job(job_id).result()
async def fetch_async(client, job_id):
    async with client:
        return await (await client.get_job(job_id)).result()
url, job_id, mode, reference = sys.argv[1:5]
client = AsyncClient(url) if mode == "async" else Client(url)
base = high_water_kib()
start = time.perf_counter()
result = asyncio.run(fetch_async(client, job_id)) if mode == "async" else fetch(client, job_id, mode)
seconds = time.perf_counter() - start
peak = high_water_kib()
expected = FixedPoints.load(reference)
same = all(result.arrays()[k].tobytes() == v.tobytes() and result.arrays()[k].dtype == v.dtype
           for k, v in expected.arrays().items()) and result.arrays().keys() == expected.arrays().keys()
print(json.dumps({"seconds": seconds, "peak_mib": (peak - base) / 1024, "identical": same}))
"""


def write_result(service, n: int, d: int) -> tuple[str, Path]:
    """A succeeded job whose result holds ``(n, d, d)`` float32 Jacobians; (job id, result path)."""
    from fpf_client import FixedPoints
    from service.core.artifacts import ArtifactStore
    from service.core.records import DEFAULT_TENANT, Job, JobStatus
    from service.core.store import RecordStore

    rng = np.random.default_rng(0)
    result = FixedPoints(
        xstar=rng.standard_normal((n, d), dtype=np.float32),
        qstar=rng.random(n) * 1e-12,
        J_xstar=rng.standard_normal((n, d, d), dtype=np.float32),
        info={"n_samples": n},
    )
    job = Job(
        id=uuid.uuid4().hex,
        model_id="benchmark",
        status=JobStatus.SUCCEEDED,
        n_initial_states=n,
        options={},
        created_at=time.time(),
        finished_at=time.time(),
        tenant=DEFAULT_TENANT,
    )
    artifacts = ArtifactStore(service.data_dir)
    path = artifacts.result_path(job.id)
    with artifacts.atomic_write(path) as out:
        result.save(out)
    RecordStore.from_url(service.redis_url, service.prefix, result_ttl_s=3600).create_job(job)
    return job.id, path


def fetch(url: str, job_id: str, mode: str, reference: Path, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", FETCH, url, job_id, mode, str(reference)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--skip-json", action="store_true", help="leave out the (slow, memory-hungry) JSON leg")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from service_harness import free_port, start_service  # the integration-test harness

    with tempfile.TemporaryDirectory() as tmp, start_service(Path(tmp)) as service:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "service.ops.cli", "--log-level", "warning", "grpc", "--port", str(port)],
            cwd=REPO,
            env=service.env,
            start_new_session=True,
        )
        try:
            job_id, path = write_result(service, args.n, args.d)
            time.sleep(3)  # the gRPC server's start
            print(
                f"result: n={args.n}, d={args.d}: J_xstar {args.n * args.d * args.d * 4 / 2**20:.0f} MiB float32, "
                f".npz {path.stat().st_size / 2**20:.0f} MiB"
            )
            grpc_url = f"grpc://127.0.0.1:{port}"
            legs = [
                ("REST npz", service.url, "npz"),
                ("gRPC stream", grpc_url, "grpc"),
                ("async npz", service.url, "async"),
                ("async gRPC", grpc_url, "async"),
            ]
            if not args.skip_json:
                legs.append(("REST JSON", service.url, "json"))
            baseline = None
            print(f"{'transport':<12} {'time (s)':>9} {'peak MiB':>9} {'time/npz':>9} {'mem/npz':>8}  identical")
            for name, url, mode in legs:
                got = fetch(url, job_id, mode, path, service.env)
                baseline = baseline or got
                print(
                    f"{name:<12} {got['seconds']:9.2f} {got['peak_mib']:9.0f} "
                    f"{got['seconds'] / baseline['seconds']:9.2f} "
                    f"{got['peak_mib'] / max(baseline['peak_mib'], 1.0):8.2f}  "
                    f"{got['identical']}",
                    flush=True,
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(15)


if __name__ == "__main__":
    main()
