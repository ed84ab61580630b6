"""The client's REST transports: the operations of :class:`fpf_client.transport.Transport` and
:class:`fpf_client.transport.AsyncTransport` over httpx.

Each operation is a :class:`~fpf_client.protocol.Call` built and read by :mod:`fpf_client.protocol`;
the two classes only differ in how they send it and read the event stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

import httpx

from . import protocol, retry
from .events import NoEventStream, SSEDecoder
from .fixed_points import FixedPoints
from .payloads import ArraysPayload, ModelFile, UploadHints
from .protocol import Call, T
from .records import JobRecord, Model
from .retry import RetryPolicy

#: The request headers of the event stream.
_EVENT_STREAM = {"Accept": "text/event-stream"}


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class _Events:
    """Reads one opened ``/events`` response: whether to read it, and the records its lines carry."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.decoder = SSEDecoder()

    def opened(self) -> bool:
        """Whether the stream is open; False for "not now" (it may be opened again later).

        Raises
        ------
        NoEventStream
            When the answer is no event stream at all: the caller polls from then on.
        """
        if protocol.is_stream_unavailable(self.response):
            return False
        if not protocol.is_event_stream(self.response):
            raise NoEventStream
        return True

    def feed(self, line: str) -> tuple[JobRecord | None, bool]:
        """The record a line completes (if any), and whether it was the ``end`` event."""
        event = self.decoder.feed(line)
        if event is None:
            return None, False
        return protocol.event_record(event), event.event == "end"


class HttpTransport:
    """The REST API over a blocking httpx client; calls are sent again through outages as
    ``retry_policy`` says."""

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
            response = self.http.request(
                call.method, call.path, timeout=call.timeout(self.http.timeout), **call.request_kwargs()
            )
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

    def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints:
        return self.send(protocol.job_result(job_id, wait_s))

    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, None]:
        """Job records from the event stream until it ends, breaks or the deadline passes.

        A silent stream is reopened; a broken one ends (the caller may open it again after checking
        the job); an answer that is no event stream raises :class:`~fpf_client.events.NoEventStream`.
        """
        while protocol.seconds_left(deadline) > 0:
            timeout = protocol.stream_timeout(self.http.timeout, deadline)
            try:
                with self.http.stream(
                    "GET", protocol.job_events_path(job_id), headers=_EVENT_STREAM, timeout=timeout
                ) as response:
                    events = _Events(response)
                    if not events.opened():
                        return
                    for line in response.iter_lines():
                        record, end = events.feed(line)
                        if record is not None:
                            yield record
                        if end:
                            yield self.get_job(job_id)
                    return
            except httpx.ReadTimeout:
                continue
            except httpx.TransportError:
                return


class AsyncHttpTransport:
    """The REST API over an asynchronous httpx client, sent as :class:`HttpTransport` sends it."""

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, headers=auth_headers(api_key), timeout=timeout)
        self.retry_policy = retry_policy
        self.reached = False

    async def send(self, call: Call[T]) -> T:
        return await retry.acall(
            self.retry_policy,
            lambda: self._send_once(call),
            call.what,
            idempotent=call.idempotent,
            done_if=call.done_if,
            seen=lambda: self.reached,
        )

    async def _send_once(self, call: Call[T]) -> T:
        try:
            response = await self.http.request(
                call.method, call.path, timeout=call.timeout(self.http.timeout), **call.request_kwargs()
            )
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        self.reached = True
        return call.read(response)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        return await self.send(protocol.upload_model(model, hints))

    async def get_model(self, model_id: str) -> Model:
        return await self.send(protocol.get_model(model_id))

    async def list_models(self) -> list[Model]:
        return await self.send(protocol.list_models())

    async def delete_model(self, model_id: str) -> None:
        await self.send(protocol.delete_model(model_id))

    async def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord:
        return await self.send(protocol.submit_job(model_id, arrays.npz, options, idempotency_key))

    async def get_job(self, job_id: str) -> JobRecord:
        return await self.send(protocol.get_job(job_id))

    async def list_jobs(self, status: str | None) -> list[JobRecord]:
        return await self.send(protocol.list_jobs(status))

    async def cancel_job(self, job_id: str) -> None:
        await self.send(protocol.cancel_job(job_id))

    async def delete_job(self, job_id: str) -> None:
        await self.send(protocol.delete_job(job_id))

    async def job_result(self, job_id: str, wait_s: float = 0.0) -> FixedPoints:
        return await self.send(protocol.job_result(job_id, wait_s))

    async def job_events(self, job_id: str, deadline: float) -> AsyncGenerator[JobRecord, None]:
        """Job records from the event stream, as :meth:`HttpTransport.job_events` gives them."""
        while protocol.seconds_left(deadline) > 0:
            timeout = protocol.stream_timeout(self.http.timeout, deadline)
            try:
                async with self.http.stream(
                    "GET", protocol.job_events_path(job_id), headers=_EVENT_STREAM, timeout=timeout
                ) as response:
                    events = _Events(response)
                    if not events.opened():
                        return
                    async for line in response.aiter_lines():
                        record, end = events.feed(line)
                        if record is not None:
                            yield record
                        if end:
                            yield await self.get_job(job_id)
                    return
            except httpx.ReadTimeout:
                continue
            except httpx.TransportError:
                return
