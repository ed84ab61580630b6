"""One engine call for the jobs of a batch, split back into one outcome per job.

Used by the sandboxed child and by the in-process runner alike. A batch of one is a plain
``find_fixed_points`` call; a larger one goes through ``find_fixed_points_batch``, whose
results each equal a separate call. Should the batched call fail, each job is solved alone, so
that one job's failure stays its own. Nothing here imports the gateway's modules; torch comes
in with the engine, on first use.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpf_client.errors import FpfError
from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions

log = logging.getLogger(__name__)

#: ``report(progress, job)``: a progress report of the job at index ``job`` of the batch, or of the
#: whole batch (None: the engine reports a batched call as one search).
BatchProgress = Callable[[dict[str, Any], "int | None"], None]


@dataclass(frozen=True)
class JobArrays:
    """The arrays of one job: ``initial_states: (n, n_states)``, ``inputs: (1 | n, n_inputs)``, ``cond_ids: (n,)``."""

    initial_states: np.ndarray
    inputs: np.ndarray
    cond_ids: np.ndarray | None = None

    @classmethod
    def load(cls, npz: Any) -> JobArrays:
        """From a job's arrays file: a path, or its bytes."""
        source = io.BytesIO(npz) if isinstance(npz, (bytes, bytearray, memoryview)) else npz
        with np.load(source, allow_pickle=False) as arrays:
            cond_ids = arrays["cond_ids"] if "cond_ids" in arrays.files else None
            return cls(arrays["initial_states"], arrays["inputs"], cond_ids)


def solve_jobs(
    model: Any,
    jobs: Sequence[JobArrays],
    options: FinderOptions,
    report: BatchProgress,
    *,
    time_limit_s: float | None = None,
) -> tuple[list[FixedPoints | FpfError], float]:
    """Find the fixed points of every job of a batch in one engine call; each job's result (or its
    error) and the engine's seconds."""
    from workers.engine import find_fixed_points

    start = time.perf_counter()
    if len(jobs) == 1:
        job = jobs[0]
        result = find_fixed_points(
            model,
            job.initial_states,
            job.inputs,
            options,
            progress=lambda progress: report(progress, 0),
            time_limit_s=time_limit_s,
            cond_ids=job.cond_ids,
        )
        return [result], time.perf_counter() - start
    try:
        results: list[FixedPoints | FpfError] = list(_batched(model, jobs, options, report, time_limit_s))
    except FpfError:
        log.info("a batch of %d jobs failed in one call; solving each alone", len(jobs), exc_info=True)
        results = []
        for index, job in enumerate(jobs):
            remaining = None if time_limit_s is None else max(0.0, time_limit_s - (time.perf_counter() - start))
            try:
                results.append(
                    find_fixed_points(
                        model,
                        job.initial_states,
                        job.inputs,
                        options,
                        progress=lambda progress, index=index: report(progress, index),
                        time_limit_s=remaining,
                        cond_ids=job.cond_ids,
                    )
                )
            except FpfError as exc:
                results.append(exc)
    return results, time.perf_counter() - start


def _batched(
    model: Any, jobs: Sequence[JobArrays], options: FinderOptions, report: BatchProgress, time_limit_s: float | None
) -> list[FixedPoints]:
    from workers.engine import SearchRequest, find_fixed_points_batch

    requests = [SearchRequest(job.initial_states, job.inputs, job.cond_ids) for job in jobs]
    return find_fixed_points_batch(
        model, requests, options, progress=lambda progress: report(progress, None), time_limit_s=time_limit_s
    )
