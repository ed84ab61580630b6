"""The web page's result view (``service.gateway.web.view.result_view``) on a large synthetic result.

2,000 points of 1,024 states with ``n_eigs = 8`` leading eigenpairs each (eigval (2000, 8),
eigvec (2000, 1024, 8), complex64), about a quarter stable and the rest saddles of index 1 to 3,
saved with ``FixedPoints.save`` as the workers save results. It prints the compressed file's size,
the time to read the archive's members, the whole view's time and the size of its JSON.

Run from the repository root: ``OPENBLAS_NUM_THREADS=1 python -m benchmarks.web_view [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from fpf_client import FixedPoints
from service.gateway.web.view import result_view


def synthetic_result(path: Path, k: int = 2000, d: int = 1024, m: int = 8) -> None:
    rng = np.random.default_rng(0)
    n_unstable = rng.integers(0, 4, k)
    eigval = (0.5 * (rng.normal(size=(k, m)) + 1j * rng.normal(size=(k, m)))).astype(np.complex64)
    for i in range(k):
        eigval[i, : n_unstable[i]] = 1.5
    FixedPoints(
        xstar=rng.normal(size=(k, d)).astype(np.float32),
        qstar=10 ** rng.uniform(-16, -12, k),
        eigval_J_xstar=eigval,
        eigvec_J_xstar=rng.normal(size=(k, d, m)).astype(np.complex64),
        is_stable=n_unstable == 0,
        n_unstable=n_unstable,
        certified=np.ones(k, bool),
    ).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "result.npz"
        synthetic_result(path)
        print(f"result file: {path.stat().st_size / 2**20:.1f} MiB")
        reads, views = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with np.load(path, allow_pickle=False) as archive:
                for name in archive.files:
                    if name != "J_xstar":
                        archive[name]
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            view = result_view(path)
            views.append(time.perf_counter() - start)
        text = json.dumps(view, allow_nan=False, separators=(",", ":"))
        print(f"reading the members: {min(reads):.2f} s (best of {args.repeats})")
        print(f"whole view:          {min(views):.2f} s (best of {args.repeats})")
        print(
            f"view JSON:           {len(text) / 2**20:.2f} MiB, {len(view['spectra']['re'])} eigenvalues, "
            f"{len(view['modes']['point'])} mode segments"
        )


if __name__ == "__main__":
    main()
