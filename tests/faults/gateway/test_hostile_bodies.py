"""Malformed and hostile request bodies: each gets its documented 4xx problem, never a 500, a stall of
the gateway, or more stored than was admitted."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from service_harness import LiveService

pytestmark = pytest.mark.integration

DEEP = 100_000


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code and body["detail"], body
    return body


def _npz(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.fixture
def http(fault_service: LiveService) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fault_service.url, timeout=60) as client:
        yield client


def _post_json(http: httpx.Client, text: str) -> httpx.Response:
    return http.post("/v1/jobs", content=text.encode(), headers={"Content-Type": "application/json"})


def _states(model: dict[str, Any], n: int = 2) -> list[list[float]]:
    return np.zeros((n, model["n_states"])).tolist()


def test_deeply_nested_json_is_refused_not_a_crash(http: httpx.Client, fault_model: dict[str, Any]) -> None:
    model_id = json.dumps(fault_model["id"])
    in_states = f'{{"model_id": {model_id}, "initial_states": {_nested(DEEP)}}}'
    assert "not valid JSON" in _problem(_post_json(http, in_states), 400, "invalid_request")["detail"]
    in_options = f'{{"model_id": {model_id}, "initial_states": [[0]], "options": {{"tol_q": {_nested(DEEP)}}}}}'
    _problem(_post_json(http, in_options), 400, "invalid_request")
    as_form = http.post(
        "/v1/jobs",
        data={"model_id": fault_model["id"], "options": f'{{"x": {_nested(DEEP)}}}'},
        files={"arrays": ("arrays.npz", _npz(initial_states=np.zeros((1, fault_model["n_states"]))))},
    )
    _problem(as_form, 422, "invalid_options")


@pytest.mark.parametrize(
    "change, code",
    [
        ({"options": {"tol_q": "1e-10"}}, "invalid_options"),
        ({"options": {"max_iters": True}}, "invalid_options"),
        ({"options": {"do_compute_jacobians": "false"}}, "invalid_options"),
        ({"initial_states": "strings"}, "invalid_array"),
        ({"initial_states": "booleans"}, "invalid_array"),
        ({"inputs": [["0", "0", "0"]]}, "invalid_array"),
    ],
)
def test_strings_and_booleans_are_not_numbers(
    http: httpx.Client, fault_model: dict[str, Any], change: dict[str, Any], code: str
) -> None:
    body: dict[str, Any] = {"model_id": fault_model["id"], "initial_states": _states(fault_model)}
    body.update(change)
    if body["initial_states"] == "strings":
        body["initial_states"] = [[str(v) for v in row] for row in _states(fault_model)]
    elif body["initial_states"] == "booleans":
        body["initial_states"] = [[True] * fault_model["n_states"]]
    _problem(http.post("/v1/jobs", json=body), 422, code)


def test_an_npz_that_inflates_past_the_body_limit_is_refused_from_its_headers(
    http: httpx.Client,
    fault_service: LiveService,
    fault_model: dict[str, Any],
) -> None:
    bomb = _npz(compressed=True, initial_states=np.zeros((4000, 4000)))  # 128 MB of float64 zeros
    limit = int(fault_service.env["FPF_MAX_BODY_BYTES"])
    assert len(bomb) < 200 * 2**10 and limit < 4000 * 4000 * 8
    jobs_before = set(p.name for p in (fault_service.data_dir / "jobs").iterdir())
    response = http.post("/v1/jobs", data={"model_id": fault_model["id"]}, files={"arrays": ("arrays.npz", bomb)})
    body = _problem(response, 413, "payload_too_large")
    assert body["limit"] == limit and body["field"] == "arrays" and str(4000 * 4000 * 8) in body["detail"]
    assert set(p.name for p in (fault_service.data_dir / "jobs").iterdir()) == jobs_before


def test_model_file_names_are_kept_as_a_safe_base_name(http: httpx.Client, fault_service: LiveService) -> None:
    payload = b"not a model, but stored by its sha256 " + str(time.time()).encode()
    for name, kept in [("../../../../tmp/x.pt", "x.pt"), ("..\\..\\evil.pt", "evil.pt"), ("..", None)]:
        response = http.post("/v1/models", files={"file": (name, payload + name.encode())})
        assert response.status_code == 202, response.text
        assert response.json()["filename"] == kept
        assert http.get(f"/v1/models/{response.json()['id']}").json()["filename"] == kept
        http.delete(f"/v1/models/{response.json()['id']}")
    assert sorted(p.parent for p in fault_service.data_dir.rglob("*") if p.is_file() and "x.pt" in p.name) == []


def test_healthz_stays_fast_while_a_large_json_body_is_parsed(
    http: httpx.Client, fault_service: LiveService, fault_model: dict[str, Any]
) -> None:
    """A body near the limit is parsed off the event loop: /healthz answers meanwhile."""
    limit = int(fault_service.env["FPF_MAX_BODY_BYTES"])
    n_states = fault_model["n_states"]
    rows = np.random.default_rng(0).normal(size=(limit // (24 * n_states), n_states)).tolist()
    body = json.dumps({"model_id": "0" * 64, "initial_states": rows}).encode()  # no such model: 404 once parsed
    assert limit // 2 < len(body) < limit
    answers: list[httpx.Response] = []
    posting = threading.Thread(
        target=lambda: answers.append(_post_json(httpx.Client(base_url=fault_service.url, timeout=120), body.decode()))
    )
    posting_started = time.monotonic()
    posting.start()
    latencies = []
    while posting.is_alive():
        started = time.monotonic()
        assert http.get("/healthz").status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)
    posting.join()
    posting_s = time.monotonic() - posting_started
    _problem(answers[0], 404, "model_not_found")
    # On the event loop, parsing held /healthz for most of the POST (seconds for a body this size); off it,
    # /healthz waits only for the CPU it shares with the parse and whatever else the machine runs, so the
    # bound is relative to the POST, with a floor for a busy machine's scheduling delays.
    assert len(latencies) >= 3 and max(latencies) < max(2.0, 0.5 * posting_s), (posting_s, latencies)
