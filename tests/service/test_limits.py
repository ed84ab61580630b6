"""Per-tenant quotas on a live service: 429 quota_exceeded with Retry-After, and nothing left behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import SLOW_OPTIONS, LiveService, random_states, start_service

pytestmark = pytest.mark.integration

QUEUED_JOBS, STORED_BYTES, RETRY_AFTER_S = 2, 400_000, 7


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    settings = {
        "FPF_QUOTA_QUEUED_JOBS": str(QUEUED_JOBS),
        "FPF_QUOTA_STORED_BYTES": str(STORED_BYTES),
        "FPF_QUOTA_RETRY_AFTER_S": str(RETRY_AFTER_S),
    }
    with start_service(tmp_path_factory.mktemp("fpf-limits"), **settings) as live:
        yield live


@pytest.fixture(scope="module")
def http(service: LiveService) -> Iterator[httpx.Client]:
    with service.client() as client:
        yield client


@pytest.fixture(scope="module")
def model(service: LiveService, tanh_rnn_path: Path) -> dict[str, Any]:
    record = service.upload_model(tanh_rnn_path)
    assert record["status"] == "ready", record
    return record


def _quota_problem(response: httpx.Response, quota: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)
    body = response.json()
    assert (body["code"], body["quota"]) == ("quota_exceeded", quota), body
    return body


def test_queued_jobs_beyond_the_quota_get_429(service: LiveService, http: httpx.Client, model: dict[str, Any]) -> None:
    submitted = []
    try:
        slow = http.post(
            "/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(1024), "options": SLOW_OPTIONS}
        ).json()
        submitted.append(slow["id"])
        assert service.wait_status(slow["id"], {"running", "succeeded", "failed"})["status"] == "running"
        for seed in range(QUEUED_JOBS):
            response = http.post(
                "/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(2, seed=seed)}
            )
            assert response.status_code == 202, response.text
            submitted.append(response.json()["id"])
        before = {j["id"] for j in http.get("/v1/jobs").json()}
        refused = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(2, seed=99)})
        _quota_problem(refused, "queued_jobs")
        assert {j["id"] for j in http.get("/v1/jobs").json()} == before  # nothing was stored
        assert sorted(p.name for p in (service.data_dir / "jobs").iterdir()) == sorted(before)
    finally:
        for job_id in submitted:
            http.delete(f"/v1/jobs/{job_id}")


def test_uploads_beyond_the_stored_bytes_quota_get_429_and_leave_no_file(
    service: LiveService, http: httpx.Client, model: dict[str, Any]
) -> None:
    models_before = {m["id"] for m in http.get("/v1/models").json()}
    files_before = set((service.data_dir / "models").iterdir())
    refused = http.post("/v1/models", files={"file": ("big.bin", os.urandom(STORED_BYTES + 1))})
    body = _quota_problem(refused, "stored_bytes")
    assert body["limit"] == STORED_BYTES
    assert {m["id"] for m in http.get("/v1/models").json()} == models_before
    assert set((service.data_dir / "models").iterdir()) == files_before


def test_job_arrays_count_against_stored_bytes(http: httpx.Client, model: dict[str, Any]) -> None:
    n = STORED_BYTES // (8 * 8) + 1  # float64 initial states alone pass the quota
    refused = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(n)})
    _quota_problem(refused, "stored_bytes")


def test_stored_bytes_are_the_files_a_tenant_keeps_and_a_deleted_job_frees_them(
    service: LiveService, http: httpx.Client, model: dict[str, Any]
) -> None:
    submitted = []
    try:
        done = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(4)}).json()
        submitted.append(done["id"])
        assert service.wait_status(done["id"], {"succeeded", "failed"})["status"] == "succeeded"
        assert (service.data_dir / "jobs" / done["id"] / "result.npz").exists()
        kept = [service.data_dir / "models" / model["id"], *(service.data_dir / "jobs").glob("*/*")]
        used = sum(path.stat().st_size for path in kept)  # the model, every job's arrays and result
        row, inputs = 8 * model["n_states"], 8 * model["n_inputs"]  # float64 states; one row of zero inputs
        n = (STORED_BYTES - used - inputs) // row  # the most initial states that fit, to the byte

        over = random_states(n + 1, d=model["n_states"])
        _quota_problem(http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": over}), "stored_bytes")
        fits = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": over[:n]})
        assert fits.status_code == 202, fits.text
        assert http.delete(f"/v1/jobs/{fits.json()['id']}").status_code == 204

        assert http.delete(f"/v1/jobs/{done['id']}").status_code == 204  # its arrays and result are freed
        freed = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": over})
        assert freed.status_code == 202, freed.text
        submitted.append(freed.json()["id"])
    finally:
        for job_id in submitted:
            http.delete(f"/v1/jobs/{job_id}")
