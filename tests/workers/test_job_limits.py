"""A job's limits on a live service (REST and gRPC): the soft wall-time limit gives a partial result,
the hard one fails the job at once without re-running it, results over FPF_MAX_RESULT_BYTES fail before
anything is written, models over FPF_MAX_N_STATES are invalid, and a queued job whose message was
never sent runs anyway."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from service_harness import LiveService, grpc_server, random_states, start_service

from fpf_client import FixedPoints
from fpf_client.rpc.stubs import load
from service.core.artifacts import ArtifactStore
from service.core.records import Job, JobStatus
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

#: The limits leave a small job seconds to spare on a busy machine: what runs past them is the models'
#: own slowness. They count from the moment the job's sandbox is ready (a cold start after the hard
#: limit's kill is not the next job's time); validation has a limit of its own and no part here.
SOFT_S, HARD_S, MAX_RESULT_BYTES, MAX_N_STATES = 4, 10, 2**20, 40
#: 512 chunks of LM on a slowed-down map: each chunk a fraction of a second, so some finish within
#: SOFT_S even on a busy machine, and the whole a minute or more, far beyond SOFT_S even on an idle one.
LONG_JOB = {"n": 32768, "options": {"method": "auto", "batch_size": 64, "dtype": "float64"}}
#: The positive root of tanh(1.5 x) = x.
ROOT = 0.8585596


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = {
        "FPF_SOFT_TIME_LIMIT_S": str(SOFT_S),
        "FPF_HARD_TIME_LIMIT_S": str(HARD_S),
        "FPF_SANDBOX_CPU_S": "600",
        "FPF_MAX_RESULT_BYTES": str(MAX_RESULT_BYTES),
        "FPF_MAX_N_STATES": str(MAX_N_STATES),
        "FPF_RESEND_QUEUED_AFTER_S": "2",
    }
    with start_service(tmp_path_factory.mktemp("fpf-job-limits"), **settings) as live:
        yield live


@pytest.fixture(scope="module")
def http(service: LiveService) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


@pytest.fixture(scope="module")
def stub(service: LiveService) -> Iterator[Any]:
    with grpc_server(service) as target, grpc.insecure_channel(target) as channel:
        yield load().pb2_grpc.FixedPointServiceStub(channel)


def _scripted(module: Any, directory: Path, name: str) -> Path:
    import torch

    path = directory / name
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scripted models, each with its part in these tests."""
    import torch
    from model_steps import EndlessStep

    class SlowTanh(torch.nn.Module):
        """h' = tanh(1.5 h) per unit, slowed down by a thousand passes that change nothing."""

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            x = torch.tanh(1.5 * h + 0.0 * u.sum(-1, keepdim=True))
            for _ in range(1000):
                x = x * 1.0
            return x

    class Identity(torch.nn.Module):
        """Every state is a fixed point: one result point per initial state."""

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return h + 0.0 * u.sum(-1, keepdim=True)

    class Wide(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.W = torch.nn.Parameter(0.1 * torch.eye(MAX_N_STATES + 8))

        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            return torch.tanh(h @ self.W + 0.0 * u.sum(-1, keepdim=True))

    directory = tmp_path_factory.mktemp("limit-models")
    return {
        name: _scripted(module, directory, f"{name}.pt")
        for name, module in (
            ("slow_tanh", SlowTanh()),
            ("slow", EndlessStep()),
            ("identity", Identity()),
            ("wide", Wide()),
        )
    }


@pytest.fixture(scope="module")
def models(service: LiveService, tanh_rnn_path: Path, model_files: dict[str, Path]) -> dict[str, Any]:
    """The models uploaded to the module's service, validated."""
    return {
        "tanh": service.upload_model(tanh_rnn_path),
        "slow_tanh": service.upload_model(model_files["slow_tanh"], n_states=4, n_inputs=1),
        "slow": service.upload_model(model_files["slow"], n_states=8, n_inputs=1),
        "identity": service.upload_model(model_files["identity"], n_states=32, n_inputs=1),
        "wide": service.upload_model(model_files["wide"], n_states=MAX_N_STATES + 8, n_inputs=1),
    }


def _submit(http: httpx.Client, model: dict[str, Any], states: list[list[float]], **options: Any) -> str:
    response = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": states, "options": options})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def test_the_soft_limit_ends_the_job_succeeded_with_a_partial_result(
    service: LiveService, http: httpx.Client, models: dict[str, Any], stub: Any
) -> None:
    job_id = _submit(http, models["slow_tanh"], random_states(LONG_JOB["n"], d=4), **LONG_JOB["options"])
    job = service.wait_job(job_id, timeout_s=60)
    assert job["status"] == "succeeded" and job["partial"] is True, job
    assert SOFT_S <= job["timings"]["engine_s"] < HARD_S
    assert stub.GetJob(load().pb2.GetJobRequest(job_id=job_id)).partial

    result = FixedPoints.load(http.get(f"/v1/jobs/{job_id}/result", params={"format": "npz"}).content)
    info = result.info
    assert info["partial"] is True and "time limit" in info["partial_reason"], info
    assert info["n_converged"] > 0 and info["n_capped"] > 0  # some chunks ran, the search was cut short
    assert info["n_converged"] + info["n_stalled"] + info["n_capped"] == LONG_JOB["n"]
    assert result.n > 0 and (result.qstar < result.tol_q).all()  # only converged samples are fixed points
    distance = np.abs(np.abs(result.xstar)[..., None] - np.array([0.0, ROOT])).min(-1)
    assert distance.max() < 1e-6  # each is a true root: every unit at 0 or +-ROOT
    assert http.get(f"/v1/jobs/{job_id}/result").json()["info"]["partial"] is True


def test_a_job_within_the_soft_limit_is_not_partial(
    service: LiveService, http: httpx.Client, models: dict[str, Any]
) -> None:
    job = service.wait_job(_submit(http, models["tanh"], random_states(16)), timeout_s=60)
    assert job["status"] == "succeeded" and job["partial"] is False, job


def test_the_hard_limit_fails_the_job_at_once_and_it_is_not_run_again(
    service: LiveService, http: httpx.Client, models: dict[str, Any]
) -> None:
    job_id = _submit(http, models["slow"], random_states(64), max_iters=3)
    job = service.wait_job(job_id, timeout_s=60)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "time_limit_exceeded" and job["error"]["limit"] == HARD_S
    assert HARD_S <= job["timings"]["total_s"] < HARD_S + 10
    time.sleep(3)  # longer than the heartbeat's TTL: a lost run would have been re-queued by now
    assert http.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1
    quick = service.wait_job(_submit(http, models["tanh"], random_states(4)), timeout_s=60)
    assert quick["status"] == "succeeded"  # the worker goes on


def test_a_result_over_the_size_limit_fails_before_anything_is_written(
    service: LiveService, http: httpx.Client, models: dict[str, Any], stub: Any
) -> None:
    job_id = _submit(
        http, models["identity"], random_states(512, d=32), completeness="none", do_exclude_distance_outliers=False
    )
    job = service.wait_job(job_id, timeout_s=120)
    assert job["status"] == "failed", job
    error = job["error"]
    assert error["code"] == "result_too_large" and error["limit"] == MAX_RESULT_BYTES
    assert error["size_bytes"] > MAX_RESULT_BYTES  # 512 Jacobians of 32 x 32 alone are 2 MiB
    assert not (service.data_dir / "jobs" / job_id / "result.npz").exists()
    refused = http.get(f"/v1/jobs/{job_id}/result")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "result_too_large"

    small = _submit(
        http,
        models["identity"],
        random_states(512, d=32),
        completeness="none",
        do_exclude_distance_outliers=False,
        do_compute_jacobians=False,
        do_decompose_jacobians=False,
    )
    assert service.wait_job(small, timeout_s=120)["status"] == "succeeded"


def test_dimension_limits(http: httpx.Client, models: dict[str, Any]) -> None:
    wide = models["wide"]
    assert wide["status"] == "invalid"
    assert f"at most {MAX_N_STATES}" in wide["error"]["detail"], wide
    refused = http.post(
        "/v1/jobs",
        json={"model_id": models["tanh"]["id"], "initial_states": random_states(2), "options": {"max_iters": 0}},
    )
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_options"


def test_a_queued_job_whose_message_was_never_sent_runs(
    service: LiveService, http: httpx.Client, models: dict[str, Any]
) -> None:
    """As if the gateway died between storing the job and sending its message."""
    store = RecordStore.from_url(service.redis_url, service.prefix, result_ttl_s=3600)
    job = Job(
        id=uuid.uuid4().hex,
        model_id=models["tanh"]["id"],
        status=JobStatus.QUEUED,
        n_initial_states=4,
        options={},
        created_at=time.time(),
        tenant="local",
    )
    artifacts = ArtifactStore(service.data_dir)
    with artifacts.atomic_write(artifacts.arrays_path(job.id)) as out:
        np.savez(out, initial_states=np.array(random_states(4)), inputs=np.zeros((1, 2)))
    assert store.create_job(job)
    store.redis.close()
    finished = service.wait_job(job.id, timeout_s=60)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1, finished
    result = FixedPoints.load(http.get(f"/v1/jobs/{job.id}/result", params={"format": "npz"}).content)
    assert result.n >= 1 and result.info["n_samples"] == 4


def test_a_pool_process_killed_at_the_time_limit_fails_its_job_without_a_rerun(
    tmp_path_factory: pytest.TempPathFactory, model_files: dict[str, Path]
) -> None:
    """Unsandboxed, a model step that never returns keeps Celery's soft limit from being raised in
    the pool process; Celery kills the process FPF_KILL_GRACE_S later and the janitor fails the job (it used to
    re-run it up to FPF_MAX_ATTEMPTS times)."""
    settings = {
        "FPF_SANDBOX": "off",
        "FPF_SOFT_TIME_LIMIT_S": "1",
        "FPF_HARD_TIME_LIMIT_S": "3",
        "FPF_KILL_GRACE_S": "3",
    }
    with (
        start_service(tmp_path_factory.mktemp("fpf-hard-kill"), **settings) as unsandboxed,
        unsandboxed.client() as http,
    ):
        slow = unsandboxed.upload_model(model_files["slow"], n_states=8, n_inputs=1)
        job_id = _submit(http, slow, random_states(64), max_iters=3)
        job = unsandboxed.wait_job(job_id, timeout_s=120)
        assert job["status"] == "failed", job
        assert job["error"]["code"] == "time_limit_exceeded" and job["attempts"] == 1, job
        assert "its worker" in job["error"]["detail"]  # settled by the janitor, after the kill
        time.sleep(3)
        assert http.get(f"/v1/jobs/{job_id}").json()["attempts"] == 1
