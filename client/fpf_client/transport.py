"""How a :class:`~fpf_client.Client` reaches the service: REST over HTTP, or gRPC.

Each transport offers the same operations and returns the same records, so the client's
methods (and :class:`~fpf_client.Job`) are written once. The HTTP transport sends the calls
of :mod:`fpf_client.protocol` with httpx; the gRPC one is :class:`fpf_client.rpc.transport.GrpcTransport`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from . import protocol, retry
from .events import SSEDecoder
from .fixed_points import FixedPoints
from .payloads import ArraysPayload, ModelFile, UploadHints
from .protocol import Call, T
from .records import JobRecord, Model
from .retry import RetryPolicy

#: What :meth:`Transport.job_events` returns when it ends: whether the service streams events at all
#: (False: the caller polls from then on; True: the stream ended or broke, and may be opened again).
StreamEnd = bool

TRANSPORTS = ("http", "grpc")
DEFAULT_GRPC_TARGET = "127.0.0.1:50051"


class Transport(Protocol):
    """The operations of the fpf API, whatever carries them."""

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
    def job_result(self, job_id: str) -> FixedPoints: ...
    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, StreamEnd]: ...
    def close(self) -> None: ...


def transport_kind(url: str, transport: str | None) -> str:
    """``http`` or ``grpc``: as asked, else from the URL's scheme (``grpc://`` or ``grpcs://``)."""
    if transport is not None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        return transport
    return "grpc" if urlsplit(url).scheme in ("grpc", "grpcs") else "http"


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class HttpTransport:
    """The REST API over httpx: each operation is a :class:`~fpf_client.protocol.Call` sent and read,
    and sent again through outages as ``retry_policy`` says."""

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers=auth_headers(api_key), timeout=timeout)
        self.retry_policy = retry_policy
        #: Whether the service has ever answered: until then a refused connection is a wrong address.
        self.reached = False

    def send(self, call: Call[T]) -> T:
        return retry.call(
            self.retry_policy,
            lambda: self._send_once(call),
            call.what,
            idempotent=call.idempotent,
            done_if=call.done_if,
            seen=lambda: self.reached,
        )

    def _send_once(self, call: Call[T]) -> T:
        try:
            response = self.http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        self.reached = True
        return call.read(response)

    def close(self) -> None:
        self.http.close()

    def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        return self.send(protocol.upload_model(model, hints))

    def get_model(self, model_id: str) -> Model:
        return self.send(protocol.get_model(model_id))

    def list_models(self) -> list[Model]:
        return self.send(protocol.list_models())

    def delete_model(self, model_id: str) -> None:
        self.send(protocol.delete_model(model_id))

    def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord:
        return self.send(protocol.submit_job(model_id, arrays.npz, options, idempotency_key))

    def get_job(self, job_id: str) -> JobRecord:
        return self.send(protocol.get_job(job_id))

    def list_jobs(self, status: str | None) -> list[JobRecord]:
        return self.send(protocol.list_jobs(status))

    def cancel_job(self, job_id: str) -> None:
        self.send(protocol.cancel_job(job_id))

    def delete_job(self, job_id: str) -> None:
        self.send(protocol.delete_job(job_id))

    def job_result(self, job_id: str) -> FixedPoints:
        return self.send(protocol.job_result(job_id))

    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, StreamEnd]:
        """Job records from the event stream until it ends, breaks or the deadline passes.

        A silent stream is reopened; a broken one ends (True: the caller may open it again after
        checking the job); an answer that is no event stream returns False (the caller polls).
        """
        while protocol.seconds_left(deadline) > 0:
            timeout = protocol.stream_timeout(self.http.timeout, deadline)
            try:
                with self.http.stream(
                    "GET", protocol.job_events_path(job_id), headers={"Accept": "text/event-stream"}, timeout=timeout
                ) as response:
                    if protocol.is_stream_unavailable(response):
                        return True
                    if not protocol.is_event_stream(response):
                        return False
                    decoder = SSEDecoder()
                    for line in response.iter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        record = protocol.event_record(event)
                        if record is not None:
                            yield record
                        if event.event == "end":
                            yield self.get_job(job_id)
                    return True
            except httpx.ReadTimeout:
                continue
            except httpx.TransportError:
                return True
        return True


def open_transport(
    url: str, kind: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
) -> Transport:
    """The transport of ``kind`` to ``url``."""
    if kind == "grpc":
        try:
            from .rpc.transport import GrpcTransport
        except ImportError as exc:
            raise ImportError(
                f"the gRPC transport needs the grpc extra: pip install 'fpf-client[grpc]' ({exc})"
            ) from exc
        return GrpcTransport(url, api_key, timeout, retry_policy)
    return HttpTransport(url, api_key, timeout, retry_policy)
