"""API keys and tenant isolation on a live service: another tenant's ids answer 404, admins see all."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import LiveService, grpc_server, random_states, start_service

from fpf_client import Client
from fpf_client.errors import JobNotFound, ModelNotFound, Unauthenticated
from service.core.api_keys import KeyStore, Role

pytestmark = pytest.mark.integration

OPTIONS = {"method": "auto", "do_compute_jacobians": False, "do_decompose_jacobians": False}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    with start_service(tmp_path_factory.mktemp("fpf-tenants")) as live:
        yield live


@pytest.fixture(scope="module")
def keys(service: LiveService) -> dict[str, str]:
    """Keys of two labs and an admin, created while the gateway runs (it sees them without a restart)."""
    store = KeyStore(service.env["FPF_KEYS_FILE"])
    return {"a": store.create("lab-a")[1], "b": store.create("lab-b")[1], "admin": store.create("ops", Role.ADMIN)[1]}


def _client(service: LiveService, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=service.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def a(service: LiveService, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with _client(service, keys["a"]) as client:
        yield client


@pytest.fixture(scope="module")
def b(service: LiveService, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with _client(service, keys["b"]) as client:
        yield client


@pytest.fixture(scope="module")
def admin(service: LiveService, keys: dict[str, str]) -> Iterator[httpx.Client]:
    with _client(service, keys["admin"]) as client:
        yield client


def _wait(client: httpx.Client, path: str, statuses: set[str]) -> dict[str, Any]:
    for _ in range(1200):
        body = client.get(path).raise_for_status().json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise TimeoutError(path)


def _upload(client: httpx.Client, content: bytes, name: str) -> httpx.Response:
    return client.post("/v1/models", files={"file": (name, content)})


def _problem(response: httpx.Response, code: str, status: int) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    return body


@pytest.fixture(scope="module")
def a_world(a: httpx.Client, tanh_rnn_path: Path) -> dict[str, Any]:
    """What lab A owns: a ready model, an invalid model only it has, and a finished job."""
    model = _upload(a, tanh_rnn_path.read_bytes(), "a.pt").json()
    model = _wait(a, f"/v1/models/{model['id']}", {"ready", "invalid"})
    assert model["status"] == "ready", model
    private = _upload(a, os.urandom(256), "only-a.bin").json()
    job = a.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(4), "options": OPTIONS})
    assert job.status_code == 202, job.text
    job = _wait(a, f"/v1/jobs/{job.json()['id']}", {"succeeded", "failed", "cancelled"})
    assert job["status"] == "succeeded", job
    return {"model": model, "private_model_id": private["id"], "job": job}


def test_without_a_key_the_api_answers_401_but_health_and_schema_stay_open(
    service: LiveService, keys: dict[str, str]
) -> None:
    with _client(service, None) as anonymous, _client(service, "fpf_0000_forged") as forged:
        for client in (anonymous, forged):
            for method, path in [
                ("GET", "/v1/models"),
                ("GET", "/v1/jobs"),
                ("POST", "/v1/jobs"),
                ("GET", "/v1/jobs/x"),
                ("GET", "/metrics"),
            ]:
                response = client.request(method, path)
                _problem(response, "unauthenticated", 401)
                assert response.headers["www-authenticate"].startswith("Bearer")
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
        assert anonymous.get("/openapi.json").status_code == 200


def test_metrics_answer_any_valid_key(a: httpx.Client) -> None:
    assert "fpf_jobs" in a.get("/metrics").text


def test_every_endpoint_answers_404_for_another_tenants_ids(b: httpx.Client, a_world: dict[str, Any]) -> None:
    job_id, model_id = a_world["job"]["id"], a_world["private_model_id"]
    probes = [
        ("GET", f"/v1/models/{model_id}", "model_not_found"),
        ("DELETE", f"/v1/models/{model_id}", "model_not_found"),
        ("GET", f"/v1/jobs/{job_id}", "job_not_found"),
        ("POST", f"/v1/jobs/{job_id}/cancel", "job_not_found"),
        ("GET", f"/v1/jobs/{job_id}/events", "job_not_found"),
        ("GET", f"/v1/jobs/{job_id}/result", "job_not_found"),
        ("GET", f"/v1/jobs/{job_id}/result?format=npz", "job_not_found"),
        ("DELETE", f"/v1/jobs/{job_id}", "job_not_found"),
    ]
    for method, path, code in probes:
        _problem(b.request(method, path), code, 404)
    submitted = b.post("/v1/jobs", json={"model_id": a_world["model"]["id"], "initial_states": random_states(2)})
    _problem(submitted, "model_not_found", 404)
    assert job_id not in {j["id"] for j in b.get("/v1/jobs").json()}
    assert job_id not in {j["id"] for j in b.get("/v1/jobs", params={"status": "succeeded"}).json()}
    assert model_id not in {m["id"] for m in b.get("/v1/models").json()}


def test_the_owner_still_has_everything_after_the_probes(a: httpx.Client, a_world: dict[str, Any]) -> None:
    job_id = a_world["job"]["id"]
    assert a.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    assert a.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert a.get(f"/v1/models/{a_world['private_model_id']}").status_code == 200


def test_admins_see_every_tenant(admin: httpx.Client, a_world: dict[str, Any]) -> None:
    job_id = a_world["job"]["id"]
    assert admin.get(f"/v1/jobs/{job_id}").status_code == 200
    assert admin.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert job_id in {j["id"] for j in admin.get("/v1/jobs").json()}
    assert a_world["private_model_id"] in {m["id"] for m in admin.get("/v1/models").json()}
    assert admin.get(f"/v1/models/{a_world['private_model_id']}").status_code == 200


def test_the_same_bytes_are_each_tenants_own_model(
    a: httpx.Client, b: httpx.Client, a_world: dict[str, Any], tanh_rnn_path: Path
) -> None:
    first = _upload(b, tanh_rnn_path.read_bytes(), "b.pt")
    assert first.status_code == 202  # new to B, exactly as if nobody had uploaded these bytes
    model = first.json()
    assert model["id"] == a_world["model"]["id"] and model["filename"] == "b.pt" and model["status"] == "validating"
    assert _wait(b, f"/v1/models/{model['id']}", {"ready", "invalid"})["status"] == "ready"
    assert _upload(b, tanh_rnn_path.read_bytes(), "again.pt").status_code == 200

    # B deleting its record leaves A's model (and the shared file) alone
    assert b.delete(f"/v1/models/{model['id']}").status_code == 204
    _problem(b.get(f"/v1/models/{model['id']}"), "model_not_found", 404)
    assert a.get(f"/v1/models/{model['id']}").json()["filename"] == "a.pt"
    job = a.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(2), "options": OPTIONS})
    assert _wait(a, f"/v1/jobs/{job.json()['id']}", {"succeeded", "failed"})["status"] == "succeeded"


def test_idempotency_keys_are_per_tenant(
    a: httpx.Client, b: httpx.Client, a_world: dict[str, Any], tanh_rnn_path: Path
) -> None:
    model = _wait(b, f"/v1/models/{_upload(b, tanh_rnn_path.read_bytes(), 'b.pt').json()['id']}", {"ready"})
    body = json.dumps({"model_id": model["id"], "initial_states": random_states(2), "options": OPTIONS})
    headers = {"Idempotency-Key": "shared-key", "Content-Type": "application/json"}
    from_a = a.post("/v1/jobs", content=body, headers=headers)
    from_b = b.post("/v1/jobs", content=body, headers=headers)
    assert (from_a.status_code, from_b.status_code) == (202, 202)
    assert from_a.json()["id"] != from_b.json()["id"]
    assert b.post("/v1/jobs", content=body, headers=headers).json()["id"] == from_b.json()["id"]


def test_grpc_takes_the_same_keys_and_scopes_tenants_the_same(
    service: LiveService, keys: dict[str, str], a_world: dict[str, Any]
) -> None:
    job_id, private_model_id = a_world["job"]["id"], a_world["private_model_id"]
    with grpc_server(service) as target:
        for key in (None, "fpf_0000_forged"):
            with Client(f"grpc://{target}", api_key=key) as stranger, pytest.raises(Unauthenticated):
                stranger.list_models()
        with (
            Client(f"grpc://{target}", api_key=keys["a"]) as a_rpc,
            Client(f"grpc://{target}", api_key=keys["b"]) as b_rpc,
        ):
            assert a_rpc.get_job(job_id).status == "succeeded"
            assert a_rpc.get_job(job_id).result().n >= 1
            with pytest.raises(JobNotFound):
                b_rpc.get_job(job_id)
            with pytest.raises(ModelNotFound):
                b_rpc.get_model(private_model_id)
            assert job_id not in {job.id for job in b_rpc.list_jobs()}
            assert private_model_id not in {model.id for model in b_rpc.list_models()}
