"""The gateway SIGKILLed in the middle of an upload: the client sees the connection fail, nothing is
half-stored, and the same request sent again once the gateway is back succeeds (once)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_harness import REPO, LiveService

pytestmark = pytest.mark.integration

CHUNK = 64 * 2**10
BOUNDARY = "fpf-fault-boundary"


def _files(service: LiveService) -> set[Path]:
    return {p for p in service.data_dir.rglob("*") if p.is_file()}


def _kill_gateway_mid_body(
    service: LiveService, head: bytes, rest: bytes, content_type: str, headers: dict[str, str] | None = None
) -> BaseException | httpx.Response:
    """Send ``head``, SIGKILL the gateway while the client holds back ``rest``, then try to send it."""
    sent_head, gateway_killed = threading.Event(), threading.Event()

    def body() -> Iterator[bytes]:
        yield head
        sent_head.set()
        gateway_killed.wait(30)
        for start in range(0, len(rest), CHUNK):
            yield rest[start : start + CHUNK]

    outcome: list[BaseException | httpx.Response] = []

    def post() -> None:
        try:
            outcome.append(
                httpx.post(
                    f"{service.url}{'/v1/models' if 'multipart' in content_type else '/v1/jobs'}",
                    content=body(),
                    timeout=30,
                    headers={"Content-Type": content_type, **(headers or {})},
                )
            )
        except httpx.HTTPError as exc:
            outcome.append(exc)

    client = threading.Thread(target=post)
    client.start()
    assert sent_head.wait(30)
    time.sleep(0.3)  # the gateway reads the head and waits for more
    os.killpg(service.gateway.pid, signal.SIGKILL)
    service.gateway.wait(10)
    gateway_killed.set()
    client.join(30)
    return outcome[0]


def _restart_gateway(service: LiveService) -> None:
    service.start_gateway(int(service.url.rsplit(":", 1)[1]))
    service.wait_ready()


def _multipart(name: str, data: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def test_gateway_killed_mid_model_upload_stores_nothing_and_the_retry_succeeds(fault_service: LiveService) -> None:
    model_bytes = (REPO / "tests" / "data" / "flipflop_gru.pt").read_bytes()
    body = _multipart("flipflop_gru.pt", model_bytes)
    files_before = _files(fault_service)
    with httpx.Client(base_url=fault_service.url, timeout=30) as http:
        models_before = http.get("/v1/models").json()
    try:
        outcome = _kill_gateway_mid_body(
            fault_service, body[: len(body) // 2], body[len(body) // 2 :], f"multipart/form-data; boundary={BOUNDARY}"
        )
        assert isinstance(outcome, httpx.TransportError), outcome
        assert _files(fault_service) == files_before
        # What a gateway killed while it copied a model in would leave behind, from long ago.
        staged = fault_service.data_dir / "models" / ".staged-killed-mid-copy"
        staged.write_bytes(model_bytes[:1000])
        os.utime(staged, (time.time() - 3600, time.time() - 3600))
    finally:
        _restart_gateway(fault_service)
    with httpx.Client(base_url=fault_service.url, timeout=30) as http:
        assert http.get("/v1/models").json() == models_before
        retried = http.post("/v1/models", files={"file": ("flipflop_gru.pt", model_bytes)})
        assert retried.status_code == 202, retried.text
        assert fault_service.wait_model(retried.json()["id"], timeout_s=120)["status"] == "ready"
    deadline = time.monotonic() + 30
    while staged.exists():
        assert time.monotonic() < deadline, "the janitor left a staged file of a killed upload"
        time.sleep(0.1)


def test_gateway_killed_mid_job_submission_stores_nothing_and_the_retry_is_idempotent(
    fault_service: LiveService,
    fault_model: dict[str, Any],
) -> None:
    rows = ",".join(["[" + ",".join(["0.25"] * fault_model["n_states"]) + "]"] * 2000)
    body = f'{{"model_id": "{fault_model["id"]}", "initial_states": [{rows}]}}'.encode()
    key = {"Idempotency-Key": f"fault-{time.time()}"}
    with httpx.Client(base_url=fault_service.url, timeout=30) as http:
        jobs_before = http.get("/v1/jobs", params={"limit": 1000}).json()
    job_dirs_before = set((fault_service.data_dir / "jobs").iterdir())
    try:
        outcome = _kill_gateway_mid_body(
            fault_service, body[: len(body) // 2], body[len(body) // 2 :], "application/json", key
        )
        assert isinstance(outcome, httpx.TransportError), outcome
    finally:
        _restart_gateway(fault_service)
    assert set((fault_service.data_dir / "jobs").iterdir()) == job_dirs_before
    with httpx.Client(base_url=fault_service.url, timeout=30) as http:
        assert http.get("/v1/jobs", params={"limit": 1000}).json() == jobs_before
        headers = {"Content-Type": "application/json", **key}
        first = http.post("/v1/jobs", content=body, headers=headers)
        assert first.status_code == 202, first.text
        again = http.post("/v1/jobs", content=body, headers=headers)
        assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
        assert fault_service.wait_job(first.json()["id"], timeout_s=120)["status"] == "succeeded"
