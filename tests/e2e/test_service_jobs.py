"""The service end to end: upload, submit, follow, fetch, against the engine run in-process."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from service_harness import LiveService, random_states

from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions

pytestmark = pytest.mark.integration


def _submit(http: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return http.post("/v1/jobs", json=body, headers=headers)


def _result_both_ways(http: httpx.Client, job_id: str) -> tuple[FixedPoints, FixedPoints]:
    as_json = http.get(f"/v1/jobs/{job_id}/result")
    assert as_json.status_code == 200 and as_json.headers["content-type"] == "application/json"
    as_npz = http.get(f"/v1/jobs/{job_id}/result", headers={"Accept": "application/x-npz"})
    assert as_npz.status_code == 200 and as_npz.headers["content-type"] == "application/x-npz"
    return FixedPoints.from_json_dict(as_json.json()), FixedPoints.load(as_npz.content)


def test_job_result_matches_the_engine_in_process(
    live_service: LiveService, tanh_model: dict[str, Any], tanh_rnn_path: Path
) -> None:
    from workers.engine import find_fixed_points, load_model

    states = np.asarray(random_states(64, seed=1))
    inputs = np.array([[0.3, -0.2]])
    options = {"method": "auto", "random_seed": 0}
    with live_service.client() as http:
        response = _submit(
            http,
            {
                "model_id": tanh_model["id"],
                "initial_states": states.tolist(),
                "inputs": inputs.tolist(),
                "options": options,
            },
        )
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
        job = live_service.wait_job(response.json()["id"])
        assert job["status"] == "succeeded", job
        assert job["attempts"] == 1 and job["timings"]["engine_s"] > 0
        from_json, from_npz = _result_both_ways(http, job["id"])

    torch.set_num_threads(1)
    expected = find_fixed_points(load_model(tanh_rnn_path), states, inputs, FinderOptions(**options))
    assert from_json.n == from_npz.n == expected.n >= 1
    for name, value in expected.arrays().items():
        np.testing.assert_allclose(from_npz.arrays()[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_array_equal(from_json.arrays()[name], from_npz.arrays()[name], err_msg=name)

    # Independent check, in float64: each point is a root of tanh(W x + B u + b) - x.
    scripted = torch.jit.load(str(tanh_rnn_path)).double()
    x = torch.as_tensor(from_npz.xstar, dtype=torch.float64)
    u = torch.as_tensor(inputs, dtype=torch.float64).expand(len(x), -1)
    residual = (scripted(u, x) - x).abs().max().item()
    assert residual < 1e-5


def test_multipart_npz_submission_gives_the_json_answer(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    states = np.asarray(random_states(32, seed=2), dtype=np.float32)
    arrays = _npz(initial_states=states)
    with live_service.client() as http:
        by_form = http.post(
            "/v1/jobs",
            data={"model_id": tanh_model["id"], "options": '{"method": "auto"}'},
            files={"arrays": ("arrays.npz", arrays, "application/octet-stream")},
        )
        assert by_form.status_code == 202, by_form.text
        by_json = _submit(
            http, {"model_id": tanh_model["id"], "initial_states": states.tolist(), "options": {"method": "auto"}}
        )
        first, second = (live_service.wait_job(r.json()["id"]) for r in (by_form, by_json))
        assert first["status"] == second["status"] == "succeeded"
        a, _ = _result_both_ways(http, first["id"])
        b, _ = _result_both_ways(http, second["id"])
    np.testing.assert_allclose(a.xstar, b.xstar, atol=1e-6)


def test_idempotency_key_returns_the_same_job(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    body = {"model_id": tanh_model["id"], "initial_states": random_states(4, seed=3)}
    key = os.urandom(8).hex()
    with live_service.client() as http:
        first = _submit(http, body, **{"Idempotency-Key": key})
        again = _submit(http, body, **{"Idempotency-Key": key})
        other = _submit(http, {**body, "initial_states": random_states(4, seed=4)}, **{"Idempotency-Key": key})
        listed = [j["id"] for j in http.get("/v1/jobs", params={"limit": 1000}).json()]
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert listed.count(first.json()["id"]) == 1


def test_same_model_bytes_give_the_same_model(
    live_service: LiveService, tanh_model: dict[str, Any], tanh_rnn_path: Path
) -> None:
    with live_service.client() as http:
        response = http.post("/v1/models", files={"file": ("again.pt", tanh_rnn_path.read_bytes())})
        listed = [m["id"] for m in http.get("/v1/models").json()]
    assert response.status_code == 200
    assert response.json()["id"] == tanh_model["id"] == hashlib.sha256(tanh_rnn_path.read_bytes()).hexdigest()
    assert listed.count(tanh_model["id"]) == 1


def test_event_stream_follows_a_job_to_its_end(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    body = {
        "model_id": tanh_model["id"],
        "initial_states": random_states(256, seed=5),
        "options": {"method": "adam", "adam": {"lr_init": 0.05}},
    }
    events: list[tuple[str, Any]] = []
    with live_service.client() as http:
        job_id = _submit(http, body).json()["id"]
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    events.append((event, json.loads(line[len("data: ") :])))
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"progress"}
    assert events[-1][1]["status"] == "succeeded"
    running = [data for kind, data in events if data["status"] == "running" and data["progress"]]
    assert running, kinds
    iterations = [data["progress"]["iteration"] for data in running]
    assert iterations == sorted(iterations)


def test_list_filter_delete_and_metrics(live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    with live_service.client() as http:
        job_id = _submit(http, {"model_id": tanh_model["id"], "initial_states": random_states(2, seed=6)}).json()["id"]
        assert live_service.wait_job(job_id)["status"] == "succeeded"
        succeeded = [j["id"] for j in http.get("/v1/jobs", params={"status": "succeeded", "limit": 1000}).json()]
        queued = [j["id"] for j in http.get("/v1/jobs", params={"status": "queued"}).json()]
        assert job_id in succeeded and job_id not in queued
        metrics = http.get("/metrics").text
        assert 'fpf_jobs{state="succeeded"}' in metrics and "fpf_queue_depth" in metrics
        assert "fpf_job_duration_seconds_count" in metrics
        assert (live_service.data_dir / "jobs" / job_id / "result.npz").exists()

        assert http.delete(f"/v1/jobs/{job_id}").status_code == 204
        gone = http.get(f"/v1/jobs/{job_id}")
        assert gone.status_code == 404 and gone.json()["code"] == "job_not_found"
        assert not (live_service.data_dir / "jobs" / job_id).exists()


def test_health_readiness_and_openapi(live_service: LiveService) -> None:
    with live_service.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"]
        assert "/v1/jobs/{job_id}/result" in http.get("/openapi.json").json()["paths"]
        assert http.get("/docs").status_code == 200


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
