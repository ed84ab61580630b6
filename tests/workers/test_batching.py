"""Dynamic batching through the real service (gateway, Redis, a Celery worker, its sandbox, model files):
queued jobs of one tenant, model and options are solved in one engine call, each with its own result,
record, progress and cancellation, and the same result as when it runs alone.

Batches form deterministically: the worker's one pool process is held by a blocker job (adam, which is
never batched) while the jobs are queued behind it, and takes them only once the blocker is cancelled.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from service_harness import SLOW_OPTIONS, LiveService, start_service

from fpf_client import Client
from fpf_client.fixed_points import FixedPoints
from fpf_client.records import JobRecord
from service.core.api_keys import KeyStore

pytestmark = pytest.mark.integration

#: Resolves to ``lm`` on 8 states: batchable.
OPTIONS = {"method": "auto", "random_seed": 0}
#: ``lm`` on a chaotic 128-unit network that cannot meet tol_q: minutes of solver iterations.
SLOW_LM_OPTIONS = {"method": "lm", "dtype": "float64", "tol_q": 1e-30, "tol_dq": 0, "max_iters": 1_000_000}
#: info entries that describe the engine call rather than the job's result.
RUN_ENTRIES = {"wall_time_s", "iterations", "timings"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with start_service(tmp_path_factory.mktemp("fpf-batching"), FPF_BATCH_MAX_JOBS="8") as live:
        yield live


@pytest.fixture(scope="module")
def keys(service: LiveService) -> dict[str, str]:
    store = KeyStore(service.env["FPF_KEYS_FILE"])
    return {"a": store.create("lab-a")[1], "b": store.create("lab-b")[1]}


@pytest.fixture(scope="module")
def lab_a(service: LiveService, keys: dict[str, str]) -> Iterator[Client]:
    with Client(service.url, api_key=keys["a"]) as client:
        yield client


@pytest.fixture(scope="module")
def lab_b(service: LiveService, keys: dict[str, str]) -> Iterator[Client]:
    with Client(service.url, api_key=keys["b"]) as client:
        yield client


@pytest.fixture(scope="module")
def slow_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chaotic 128-unit tanh RNN (gain 2.5) with one input, as TorchScript."""
    import torch

    class Chaotic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(0)
            self.W = torch.nn.Parameter(2.5 * torch.randn(128, 128, generator=generator) / 128**0.5)
            self.B = torch.nn.Parameter(torch.randn(128, 1, generator=generator))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W.T + u @ self.B.T)

    path = tmp_path_factory.mktemp("models") / "chaotic.pt"
    torch.jit.script(Chaotic()).save(str(path))
    return path


def _states(n: int, seed: int, d: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


class Blocked:
    """Holds the worker with a blocker job of ``client`` until the block ends: jobs queued inside wait."""

    def __init__(self, client: Client, model_id: str) -> None:
        self.blocker = client.submit(model_id, _states(1024, 99), **SLOW_OPTIONS)
        deadline = time.monotonic() + 120
        while self.blocker.refresh().status != "running":
            assert self.blocker.record.status == "queued" and time.monotonic() < deadline, self.blocker.record
            time.sleep(0.05)

    def __enter__(self) -> Blocked:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.blocker.cancel()
        assert self.blocker.wait(progress=False, timeout=60).status == "cancelled"


def _wait(client: Client, job_id: str, statuses: set[str], timeout_s: float = 180) -> JobRecord:
    job = client.get_job(job_id)
    deadline = time.monotonic() + timeout_s
    while job.refresh().status not in statuses:
        assert time.monotonic() < deadline, job.record
        time.sleep(0.05)
    return job.record


def _progress(client: Client, job_id: str, after: int = -1, timeout_s: float = 180) -> int:
    """The iteration of the job's first progress report past iteration ``after`` (it is computing)."""
    job = client.get_job(job_id)
    deadline = time.monotonic() + timeout_s
    while True:
        record = job.refresh()
        assert record.status in ("queued", "running") and time.monotonic() < deadline, record
        if record.progress is not None and record.progress.iteration is not None and record.progress.iteration > after:
            return record.progress.iteration
        time.sleep(0.05)


def assert_same_result(batched: FixedPoints, alone: FixedPoints) -> None:
    """The same points and per-point fields, up to the rounding of the solver's batched float32 arithmetic."""
    assert batched.n == alone.n
    np.testing.assert_allclose(batched.xstar, alone.xstar, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(batched.cond_id, alone.cond_id)
    np.testing.assert_array_equal(batched.is_stable, alone.is_stable)
    np.testing.assert_allclose(batched.eigval_J_xstar, alone.eigval_J_xstar, rtol=0, atol=1e-4)
    assert batched.info.keys() == alone.info.keys()
    for key in alone.info.keys() - RUN_ENTRIES:
        assert batched.info[key] == alone.info[key], key


def test_a_burst_is_solved_in_one_call_per_tenant_and_options_with_the_results_of_jobs_run_alone(
    service: LiveService, lab_a: Client, lab_b: Client, tanh_rnn_path: Path
) -> None:
    model_a = lab_a.upload_model(tanh_rnn_path).id
    model_b = lab_b.upload_model(tanh_rnn_path).id
    assert model_a == model_b  # the same file: only the tenant keeps their jobs apart
    requests = [
        (lab_a, {"initial_states": _states(5 + 3 * i, seed=i)}) for i in range(4)
    ]  # different sizes, one with labels and inputs of its own
    requests.append((lab_a, {"initial_states": _states(6, seed=7), "cond_ids": np.arange(6) % 2 + 40}))
    requests.append((lab_a, {"initial_states": _states(4, seed=8), "inputs": np.full((4, 2), 0.3)}))
    requests += [(lab_b, {"initial_states": _states(9, seed=20 + i)}) for i in range(2)]
    other_options = {**OPTIONS, "random_seed": 1}

    with Blocked(lab_a, model_a):
        jobs = [client.submit(model_a, **arrays, **OPTIONS) for client, arrays in requests]
        others = [lab_a.submit(model_a, _states(7, seed=30 + i), **other_options) for i in range(2)]
        assert all(job.status == "queued" for job in [*jobs, *others])
    records = [job.wait(progress=False, timeout=180) for job in [*jobs, *others]]

    assert all(record.status == "succeeded" and record.attempts == 1 for record in records), records
    assert [record.batch_size for record in records] == [6] * 6 + [2] * 2 + [2] * 2
    calls = {(record.batch_size, record.started_at) for record in records}
    assert len(calls) == 3  # engine calls: lab-a's six, lab-b's two, lab-a's two with other options

    # Each job again, alone (nothing else queued): batching off for it, the same result and fields.
    for (client, arrays), job, record in zip(requests, jobs, records[: len(jobs)], strict=True):
        again = client.submit(model_a, **arrays, **OPTIONS)
        alone = again.wait(progress=False, timeout=120)
        assert alone.batch_size == 1 and alone.status == "succeeded"
        assert (alone.partial, alone.n_initial_states, alone.error) == (record.partial, record.n_initial_states, None)
        assert_same_result(job.result(), again.result())


def test_the_own_messages_of_batched_jobs_are_dropped_unrun(
    service: LiveService, lab_a: Client, tanh_rnn_path: Path
) -> None:
    model = lab_a.upload_model(tanh_rnn_path).id
    with Blocked(lab_a, model):
        jobs = [lab_a.submit(model, _states(6, seed=50 + i), **OPTIONS) for i in range(3)]
    before = [job.wait(progress=False, timeout=180) for job in jobs]
    assert [record.batch_size for record in before] == [3, 3, 3]

    # The queue is first in, first out and the worker runs one task at a time: once this job has
    # run, the batched jobs' own messages have been delivered.
    sentinel = lab_a.submit(model, _states(3, seed=60), **{**OPTIONS, "random_seed": 5})
    assert sentinel.wait(progress=False, timeout=120).status == "succeeded"

    after = [job.refresh() for job in jobs]
    assert after == before  # no second attempt, no new status, times or fields
    log = "\n".join(path.read_text() for path in service.log_dir.glob("worker-*.log"))
    # The leader flagged them before its engine call; the worker fetches the next message only once
    # that call's task is acknowledged, so each was dropped by the worker's main process, not the pool.
    for job in jobs[1:]:
        assert f"Discarding revoked task: fpf.run_job[{job.id}.1]" in log
        assert f"job {job.id}: delivery 1 is stale" not in log


def test_queued_jobs_of_a_model_deleted_meanwhile_fail_with_model_not_found(
    lab_a: Client, lab_b: Client, tanh_rnn_path: Path
) -> None:
    model = lab_a.upload_model(tanh_rnn_path).id
    doomed = lab_b.upload_model(tanh_rnn_path).id  # lab-b's record of the file lab-a keeps
    with Blocked(lab_a, model):
        jobs = [lab_b.submit(doomed, _states(6, seed=80 + i), **OPTIONS) for i in range(3)]
        lab_b.delete_model(doomed)
    records = [job.wait(progress=False, timeout=180) for job in jobs]
    assert [(record.status, record.attempts) for record in records] == [("failed", 1)] * 3, records
    for record in records:
        assert record.error is not None and record.error["code"] == "model_not_found", record.error
        assert record.error["detail"] == f"model {doomed} was deleted"


def test_cancelling_one_job_of_a_running_batch_leaves_the_others_running(
    service: LiveService, lab_a: Client, tanh_rnn_path: Path, slow_model_path: Path
) -> None:
    small = lab_a.upload_model(tanh_rnn_path).id
    slow = lab_a.upload_model(slow_model_path).id
    with Blocked(lab_a, small):
        jobs = [lab_a.submit(slow, _states(256, seed=70 + i, d=128), **SLOW_LM_OPTIONS) for i in range(3)]
    iteration = _progress(lab_a, jobs[0].id)
    assert [job.refresh().batch_size for job in jobs] == [3, 3, 3]

    cancelled = jobs[1].cancel()
    assert cancelled.cancel_requested
    assert _wait(lab_a, jobs[1].id, {"succeeded", "failed", "cancelled"}, timeout_s=30).status == "cancelled"
    assert _progress(lab_a, jobs[0].id, after=iteration) > iteration  # the engine goes on for the others
    assert jobs[2].refresh().status == "running"

    for job in (jobs[0], jobs[2]):
        job.cancel()
    assert [_wait(lab_a, job.id, {"succeeded", "failed", "cancelled"}, 60).status for job in jobs] == ["cancelled"] * 3
    quick = lab_a.submit(small, _states(2, seed=80), **OPTIONS)
    assert quick.wait(progress=False, timeout=120).status == "succeeded"  # the engine stopped; the worker is free


def test_every_job_of_a_batch_runs_again_after_its_worker_is_killed(
    service: LiveService, lab_a: Client, tanh_rnn_path: Path, slow_model_path: Path
) -> None:
    small = lab_a.upload_model(tanh_rnn_path).id
    slow = lab_a.upload_model(slow_model_path).id
    with Blocked(lab_a, small):
        jobs = [lab_a.submit(slow, _states(128, seed=90 + i, d=128), **SLOW_LM_OPTIONS) for i in range(3)]
    _progress(lab_a, jobs[0].id)
    # Queued behind the batch, this blocker is the first message the restarted pool process takes:
    # it holds that process while the janitor re-queues the jobs (not necessarily in one pass).
    blocker = lab_a.submit(small, _states(1024, 99), **SLOW_OPTIONS)
    (pool_process,) = service.pool_children()
    os.kill(pool_process, signal.SIGKILL)
    for job in jobs:
        _wait(lab_a, job.id, {"queued"})
    blocker.cancel()
    assert blocker.wait(progress=False, timeout=60).status == "cancelled"

    for job in jobs:  # the pool process takes the first and batches the others with it again
        deadline = time.monotonic() + 120
        while (record := job.refresh()).attempts < 2 or record.status != "running":
            assert record.status in ("running", "queued") and time.monotonic() < deadline, record
            time.sleep(0.05)
    assert [job.refresh().batch_size for job in jobs] == [3, 3, 3]
    for job in jobs:
        job.cancel()
    assert [_wait(lab_a, job.id, {"succeeded", "failed", "cancelled"}, 60).status for job in jobs] == ["cancelled"] * 3
