"""Every bad request gets its documented error code, as an RFC 9457 problem document."""

from __future__ import annotations

import io
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from service_harness import LiveService, random_states

pytestmark = pytest.mark.integration


def _problem(response: httpx.Response, code: str, status: int) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    body = response.json()
    assert (response.status_code, body["code"], body["status"]) == (status, code, status), body
    assert body["type"].endswith(f"/{code}") and body["detail"]
    return body


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.fixture
def http(live_service: LiveService) -> Iterator[httpx.Client]:
    with live_service.client() as client:
        yield client


@pytest.mark.parametrize(
    "initial_states, inputs, code",
    [
        (random_states(3, d=7), None, "shape_mismatch"),
        ([[0.0] * 8, [0.0] * 7], None, "invalid_array"),
        (random_states(3), [[0.0, 0.0]] * 2, "shape_mismatch"),
        (random_states(3), [[0.0, 0.0, 0.0]], "shape_mismatch"),
        ([[float("nan")] + [0.0] * 7], None, "non_finite"),
        (random_states(2), [[float("inf"), 0.0]], "non_finite"),
        ([["a"] * 8], None, "invalid_array"),
    ],
)
def test_bad_arrays_as_json(
    http: httpx.Client, tanh_model: dict[str, Any], initial_states: Any, inputs: Any, code: str
) -> None:
    body = {"model_id": tanh_model["id"], "initial_states": initial_states, "inputs": inputs}
    raw = json.dumps(body)  # NaN and Infinity as Python writes them (httpx refuses them)
    _problem(http.post("/v1/jobs", content=raw, headers={"Content-Type": "application/json"}), code, 422)


@pytest.mark.parametrize(
    "arrays, code",
    [
        ({"initial_states": np.zeros((2, 5))}, "shape_mismatch"),
        ({"initial_states": np.full((2, 8), np.inf)}, "non_finite"),
        ({"initial_states": np.zeros((2, 8), dtype=complex)}, "invalid_array"),
        ({"initial_states": np.zeros((2, 8)), "extra": np.zeros(1)}, "invalid_array"),
        ({"inputs": np.zeros((1, 2))}, "invalid_array"),
    ],
)
def test_bad_arrays_as_npz(http: httpx.Client, tanh_model: dict[str, Any], arrays: dict[str, Any], code: str) -> None:
    response = http.post(
        "/v1/jobs", data={"model_id": tanh_model["id"]}, files={"arrays": ("arrays.npz", _npz(**arrays))}
    )
    _problem(response, code, 422)


@pytest.mark.parametrize(
    "payload",
    [
        b"not a zip file at all",
        _npz(initial_states=np.zeros((2, 8)))[:100],
        _npz(initial_states=np.array([object()] * 8, dtype=object).reshape(1, 8)),
        pickle.dumps({"initial_states": np.zeros((2, 8))}),
    ],
)
def test_malformed_and_pickled_npz(http: httpx.Client, tanh_model: dict[str, Any], payload: bytes) -> None:
    response = http.post("/v1/jobs", data={"model_id": tanh_model["id"]}, files={"arrays": ("arrays.npz", payload)})
    _problem(response, "invalid_array", 422)


@pytest.mark.parametrize(
    "options",
    [
        {"method": "bogus"},
        {"not_an_option": 1},
        {"tol_q": -1},
        {"q_slow": 1e-14, "tol_q": 1e-12},
        {"lm_krylov": {"cg_iters": 0}},
        {"lm": {"warm_start": 3}},
        {"lr_init": 0.1, "adam": {"lr_init": 0.2}},
    ],
)
def test_bad_options(http: httpx.Client, tanh_model: dict[str, Any], options: dict[str, Any]) -> None:
    body = {"model_id": tanh_model["id"], "initial_states": random_states(2), "options": options}
    _problem(http.post("/v1/jobs", json=body), "invalid_options", 422)


def test_options_that_are_not_json(http: httpx.Client, tanh_model: dict[str, Any]) -> None:
    response = http.post(
        "/v1/jobs",
        data={"model_id": tanh_model["id"], "options": "{method: newton"},
        files={"arrays": ("arrays.npz", _npz(initial_states=np.zeros((2, 8))))},
    )
    _problem(response, "invalid_options", 422)


def test_unknown_model(http: httpx.Client) -> None:
    _problem(
        http.post("/v1/jobs", json={"model_id": "0" * 64, "initial_states": random_states(1)}), "model_not_found", 404
    )
    _problem(http.get(f"/v1/models/{'0' * 64}"), "model_not_found", 404)


def test_model_not_ready_while_the_worker_is_busy(http: httpx.Client, slow_job: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    torch.jit.script(torch.nn.Linear(10, 8)).save(str(path))  # validated only after the slow job
    with open(path, "rb") as f:
        model = http.post("/v1/models", files={"file": ("linear.pt", f)}).json()
    assert model["status"] == "validating"
    body = _problem(
        http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(1)}),
        "model_not_ready",
        409,
    )
    assert model["id"] in body["detail"]


def test_invalid_model_file(http: httpx.Client, live_service: LiveService, tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a TorchScript archive")
    model = live_service.upload_model(path)
    assert model["status"] == "invalid"
    assert model["error"]["code"] == "invalid_model" and model["error"]["detail"]
    response = http.post("/v1/jobs", json={"model_id": model["id"], "initial_states": random_states(1)})
    _problem(response, "invalid_model", 422)


def test_oversized_payloads(http: httpx.Client, live_service: LiveService, tanh_model: dict[str, Any]) -> None:
    limit = int(live_service.env["FPF_MAX_BODY_BYTES"])
    declared = http.post("/v1/models", files={"file": ("big.pt", b"\0" * (limit + 1))})
    _problem(declared, "payload_too_large", 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while it streams in
        for _ in range(limit // 2**20 + 2):
            yield b"[" * 2**20

    streamed = http.post("/v1/jobs", content=chunks(), headers={"Content-Type": "application/json"})
    _problem(streamed, "payload_too_large", 413)
    assert all(f.stat().st_size <= limit for f in live_service.data_dir.joinpath("models").iterdir())


def test_job_and_route_errors(http: httpx.Client, slow_job: dict[str, Any]) -> None:
    _problem(http.get(f"/v1/jobs/{slow_job['id']}/result"), "job_not_finished", 409)
    _problem(http.get("/v1/jobs/nope"), "job_not_found", 404)
    _problem(http.get("/v1/nothing-here"), "not_found", 404)
    _problem(http.put("/v1/jobs"), "method_not_allowed", 405)
    _problem(http.post("/v1/jobs", content=b"x", headers={"Content-Type": "text/plain"}), "unsupported_media_type", 415)
    _problem(http.post("/v1/jobs", content=b"{", headers={"Content-Type": "application/json"}), "invalid_request", 400)
    _problem(http.post("/v1/models", data={"n_states": "many"}, files={"file": ("m.pt", b"x")}), "invalid_request", 400)
    _problem(http.get("/v1/jobs", params={"status": "sleeping"}), "invalid_request", 400)
