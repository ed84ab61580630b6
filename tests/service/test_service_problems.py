"""Problem documents for FastAPI's own failures and the streaming body limit, on a bare app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI, File, Request, UploadFile
from fastapi.testclient import TestClient

from fpf_client.errors import InvalidOptions
from service.gateway.limits import BodySizeLimit
from service.gateway.problems import install_problem_handlers

LIMIT = 1000


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    app.add_middleware(BodySizeLimit, max_bytes=LIMIT)
    install_problem_handlers(app)

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        return {"n": len(await request.body())}

    @app.post("/upload")
    def upload(file: UploadFile = File(...)) -> dict[str, int]:
        return {"n": len(file.file.read())}

    @app.get("/fails")
    def fails() -> None:
        raise InvalidOptions("bad", field="options")

    @app.get("/crash")
    def crash() -> None:
        raise RuntimeError("boom")

    return TestClient(app, raise_server_exceptions=False)


def _code(response, status: int) -> str:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()["code"]


def test_declared_and_streamed_bodies_over_the_limit(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * 300

    assert _code(client.post("/raw", content=b"x" * (LIMIT + 1)), 413) == "payload_too_large"
    assert _code(client.post("/raw", content=chunks()), 413) == "payload_too_large"
    assert _code(client.post("/upload", files={"file": ("f", b"x" * 2 * LIMIT)}), 413) == "payload_too_large"
    assert client.post("/raw", content=b"x" * LIMIT).json() == {"n": LIMIT}


def test_framework_errors_have_codes(client: TestClient) -> None:
    assert _code(client.get("/nowhere"), 404) == "not_found"
    assert _code(client.delete("/raw"), 405) == "method_not_allowed"
    assert _code(client.post("/upload"), 400) == "invalid_request"
    assert _code(client.get("/crash"), 500) == "internal"
    body = client.get("/fails").json()
    assert (body["code"], body["field"], body["instance"]) == ("invalid_options", "options", "/fails")
