"""When the client sends a call again: backoff with jitter, Retry-After, idempotency, and the deadline of
the wait it serves, against a real local HTTP server that answers "not now" a few times."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from fpf_client import Client
from fpf_client.errors import QuotaExceeded, ServiceUnavailable
from fpf_client.protocol import submit_job
from fpf_client.retry import RetryPolicy, is_retryable, until

JOB = {"id": "abc", "model_id": "m", "status": "queued", "n_initial_states": 1, "options": {}}


class NotNow(BaseHTTPRequestHandler):
    """Answers ``GET /v1/jobs/abc`` with the queued failures first (status, Retry-After), then the job."""

    failures: ClassVar[list[tuple[int, str | None]]] = []
    times: ClassVar[list[float]] = []

    def do_GET(self) -> None:
        type(self).times.append(time.monotonic())
        if type(self).failures:
            status, retry_after = type(self).failures.pop(0)
            body = json.dumps(
                {
                    "code": "quota_exceeded" if status == 429 else "service_unavailable",
                    "detail": "not now",
                    "status": status,
                }
            ).encode()
            self.send_response(status)
            if retry_after is not None:
                self.send_header("Retry-After", retry_after)
        else:
            body = json.dumps(JOB).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    NotNow.failures, NotNow.times = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NotNow)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    delays = RetryPolicy(first_delay=0.2, max_delay=5.0).delays()
    values = [next(delays) for _ in range(12)]
    bounds = [min(5.0, 0.2 * 2**i) for i in range(12)]
    assert all(0.5 * bound <= value <= bound for value, bound in zip(values, bounds, strict=True))
    assert len(set(values)) == len(values)  # jittered


def test_a_503_and_a_429_are_ridden_out_and_retry_after_is_honoured(server: str) -> None:
    NotNow.failures = [(503, None), (429, "1")]
    with Client(server) as client:
        assert client.get_job("abc").id == "abc"
    _, second, third = NotNow.times
    assert third - second >= 1.0  # the 429's Retry-After


def test_retries_end_at_the_retry_timeout_and_raise_the_last_error(server: str) -> None:
    NotNow.failures = [(503, None)] * 100
    start = time.monotonic()
    with Client(server, retry_timeout=1.0) as client, pytest.raises(ServiceUnavailable):
        client.get_job("abc")
    assert 1.0 <= time.monotonic() - start < 3.0 and len(NotNow.times) >= 3


def test_a_wait_deadline_replaces_the_retry_timeout(server: str) -> None:
    NotNow.failures = [(503, None)] * 100
    start = time.monotonic()
    with Client(server, retry_timeout=60) as client, until(time.monotonic() + 1.0), pytest.raises(ServiceUnavailable):
        client.get_job("abc")
    assert time.monotonic() - start < 3.0


def test_no_retries_with_a_zero_retry_timeout(server: str) -> None:
    NotNow.failures = [(503, None)]
    with Client(server, retry_timeout=0) as client, pytest.raises(ServiceUnavailable):
        client.get_job("abc")
    assert len(NotNow.times) == 1


def test_a_submission_is_retried_after_a_503_only_with_an_idempotency_key() -> None:
    unavailable, over_quota = ServiceUnavailable("down"), QuotaExceeded("full")
    assert not submit_job("m", b"", {}, None).idempotent and submit_job("m", b"", {}, "key-1").idempotent
    assert not is_retryable(unavailable, idempotent=False) and is_retryable(unavailable, idempotent=True)
    assert is_retryable(over_quota, idempotent=False)  # a 429 stored nothing
