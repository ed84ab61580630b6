"""How a client reaches the service: one interface per flavour (:class:`Transport` for
:class:`~fpf_client.Client`, :class:`AsyncTransport` for :class:`~fpf_client.AsyncClient`), each
carried by REST (:mod:`fpf_client.rest`) or gRPC (:mod:`fpf_client.rpc.transport`).

Every transport offers the same operations and returns the same records and exceptions, so the
clients' job logic (:mod:`fpf_client.flows`) is written once for all four.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator
from typing import Any, Protocol
from urllib.parse import urlsplit

from .fixed_points import FixedPoints
from .payloads import ArraysPayload, ModelFile, UploadHints
from .records import JobRecord, Model
from .rest import AsyncHttpTransport, HttpTransport
from .retry import RetryPolicy

TRANSPORTS = ("http", "grpc")
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_GRPC_TARGET = "127.0.0.1:50051"


class Transport(Protocol):
    """The operations of the fpf API, whatever carries them.

    ``job_result`` may ask the service to wait up to ``wait_s`` seconds for the job to end first
    (at most :data:`~fpf_client.records.MAX_RESULT_WAIT_S`). ``job_events`` yields the job's records
    as the service announces them until the stream ends or breaks (the caller checks the job and
    may open it again), or raises :class:`~fpf_client.events.NoEventStream` when the service
    streams no events (the caller polls).
    """

    def upload_model(self, model: ModelFile, hints: UploadHints) -> Model: ...
    def get_model(self, model_id: str) -> Model: ...
    def list_models(self) -> list[Model]: ...
    def delete_model(self, model_id: str) -> None: ...
    def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord: ...
    def get_job(self, job_id: str) -> JobRecord: ...
    def list_jobs(self, status: str | None) -> list[JobRecord]: ...
    def cancel_job(self, job_id: str) -> None: ...
    def delete_job(self, job_id: str) -> None: ...
    def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints: ...
    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, None]: ...
    def close(self) -> None: ...


class AsyncTransport(Protocol):
    """The operations of :class:`Transport` as coroutines (``job_events`` as an async iterator)."""

    async def upload_model(self, model: ModelFile, hints: UploadHints) -> Model: ...
    async def get_model(self, model_id: str) -> Model: ...
    async def list_models(self) -> list[Model]: ...
    async def delete_model(self, model_id: str) -> None: ...
    async def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord: ...
    async def get_job(self, job_id: str) -> JobRecord: ...
    async def list_jobs(self, status: str | None) -> list[JobRecord]: ...
    async def cancel_job(self, job_id: str) -> None: ...
    async def delete_job(self, job_id: str) -> None: ...
    async def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints: ...
    def job_events(self, job_id: str, deadline: float) -> AsyncGenerator[JobRecord, None]: ...
    async def aclose(self) -> None: ...


def default_url(url: str | None, transport: str | None = None) -> str:
    """``url``, else the ``FPF_URL`` environment variable, else the local default (of ``transport``)."""
    return url or os.environ.get("FPF_URL") or (DEFAULT_GRPC_TARGET if transport == "grpc" else DEFAULT_URL)


def transport_kind(url: str, transport: str | None) -> str:
    """``http`` or ``grpc``: as asked, else from the URL's scheme (``grpc://`` or ``grpcs://``)."""
    if transport is not None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        return transport
    return "grpc" if urlsplit(url).scheme in ("grpc", "grpcs") else "http"


def _rpc_transports() -> Any:
    """:mod:`fpf_client.rpc.transport`, imported only when asked for (grpcio is an extra)."""
    try:
        from .rpc import transport
    except ImportError as exc:
        raise ImportError(f"the gRPC transport needs the grpc extra: pip install 'fpf-client[grpc]' ({exc})") from exc
    return transport


def open_transport(
    url: str, kind: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
) -> Transport:
    """The transport of ``kind`` to ``url``."""
    if kind == "grpc":
        grpc_transport: Transport = _rpc_transports().GrpcTransport(url, api_key, timeout, retry_policy)
        return grpc_transport
    return HttpTransport(url, api_key, timeout, retry_policy)


def open_async_transport(
    url: str, kind: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
) -> AsyncTransport:
    """The asynchronous transport of ``kind`` to ``url``."""
    if kind == "grpc":
        grpc_transport: AsyncTransport = _rpc_transports().AsyncGrpcTransport(url, api_key, timeout, retry_policy)
        return grpc_transport
    return AsyncHttpTransport(url, api_key, timeout, retry_policy)
