"""Tenants taking turns: small jobs of three labs in rotation on one worker, with the sandboxes of one
or of the two most recent tenants kept warm (``FPF_SANDBOX_WARM_OWNERS``).

Starts the service of the test harness (gateway, one Celery worker with one pool process, the
bubblewrap sandbox, the spare sandbox on, as in production) once per setting. Each lab uploads the
same small TorchScript model; the labs then submit ``--jobs`` small jobs each, one after another
and one lab at a time: two labs alternating (a, b, a, b, ...) and three in rotation (a, b, c, ...).
Prints the median and p95 time from submission to result in hand, per setting and pattern, and the
ratio of the medians (one warm tenant over two).

Run: ``.venv/bin/python -m benchmarks.tenant_turns [--jobs 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.service_overhead import REPO, one_job, small_model
from fpf_client import Client

PATTERNS = {"2 labs alternating": 2, "3 labs in rotation": 3}


def turns(clients: list[Client], model_ids: list[str], n_labs: int, n_jobs: int) -> list[float]:
    """Seconds per job, submission to result, with the first ``n_labs`` labs taking turns."""
    seconds = []
    for index in range(n_jobs * n_labs):
        lab = index % n_labs
        seconds.append(one_job(clients[lab], model_ids[lab], seed=index)[0])
    return seconds


def measure(root: Path, model: Path, warm_owners: int, n_jobs: int) -> dict[str, list[float]]:
    sys.path.insert(0, str(REPO / "tests" / "support"))
    from service_harness import start_service  # the test harness

    from service.core.api_keys import KeyStore

    settings = {"FPF_SANDBOX_SPARE": "true", "FPF_SANDBOX_WARM_OWNERS": str(warm_owners)}
    with start_service(root, **settings) as service:
        keys = KeyStore(service.env["FPF_KEYS_FILE"])
        clients = [Client(service.url, api_key=keys.create(f"lab-{lab}")[1]) for lab in "abc"]
        try:
            model_ids = [client.upload_model(model).id for client in clients]
            for client, model_id in zip(clients, model_ids, strict=True):  # each lab's sandbox started once
                one_job(client, model_id, seed=0)
            return {name: turns(clients, model_ids, n_labs, n_jobs) for name, n_labs in PATTERNS.items()}
        finally:
            for client in clients:
                client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5, help="jobs per lab and pattern")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="fpf-turns-") as tmp:
        model = small_model(Path(tmp) / "turns.pt")
        results = {}
        for warm_owners in (1, 2):
            root = Path(tmp) / f"warm-{warm_owners}"
            root.mkdir()
            results[warm_owners] = measure(root, model, warm_owners, args.jobs)
    print(f"{args.jobs} small jobs per lab (tanh RNN d=8, 16 initial states), one worker, load {os.getloadavg()}")
    print("| pattern | warm tenants | p50 s | p95 s | p50 one / p50 two |")
    print("|---|---|---|---|---|")
    for name in PATTERNS:
        p50 = {w: statistics.median(results[w][name]) for w in (1, 2)}
        for warm_owners in (1, 2):
            seconds = sorted(results[warm_owners][name])
            p95 = seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))]
            ratio = f"{p50[1] / p50[2]:.2f}x" if warm_owners == 2 else ""
            print(f"| {name} | {warm_owners} | {p50[warm_owners]:.3f} | {p95:.3f} | {ratio} |")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"({time.perf_counter() - started:.0f} s)")
