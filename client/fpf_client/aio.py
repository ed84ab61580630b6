"""The asyncio client: :class:`AsyncClient` and :class:`AsyncJob`, the coroutine twins of Client and Job.

Requests and answers are built and decoded by :mod:`fpf_client.protocol`, as for the synchronous
client; only sending and sleeping differ.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from os import PathLike
from typing import Any

import httpx

from . import protocol, retry
from .client import default_url, submission_key
from .events import SSEDecoder
from .fixed_points import FixedPoints
from .payloads import (
    UploadHints,
    arrays_payload,
    is_local_model,
    model_file,
    model_id,
    options_payload,
)
from .progress import ProgressArg, ProgressReporter
from .protocol import Call, T
from .records import JobRecord, Model
from .retry import RetryPolicy
from .transport import auth_headers, transport_kind


class _NoEventStream(Exception):
    """The service answered the ``/events`` request with something other than a stream: poll instead."""


class AsyncClient:
    """A connection to an fpf service for asyncio code; see :class:`fpf_client.Client` for the parameters.

    Examples
    --------
    >>> async with AsyncClient() as client:                              # doctest: +SKIP
    ...     fps = await client.find_fixed_points(model_id, states, inputs)
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retry_timeout: float = RetryPolicy.timeout,
    ) -> None:
        self.url = default_url(url).rstrip("/")
        if transport_kind(self.url, None) == "grpc":
            raise ValueError(f"AsyncClient speaks REST only; for {self.url} use Client (gRPC is synchronous)")
        self._http = httpx.AsyncClient(base_url=self.url, headers=auth_headers(api_key), timeout=timeout)
        self.retry_policy = RetryPolicy(timeout=retry_timeout)
        self._reached = False

    async def _send(self, call: Call[T]) -> T:
        """Send ``call``, retried through outages as :class:`fpf_client.Client` does."""
        return await retry.acall(
            self.retry_policy,
            lambda: self._send_once(call),
            call.what,
            idempotent=call.idempotent,
            done_if=call.done_if,
            seen=lambda: self._reached,
        )

    async def _send_once(self, call: Call[T]) -> T:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as exc:
            raise protocol.unreachable(self.url, exc) from exc
        self._reached = True
        return call.read(response)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    # --- models --------------------------------------------------------------------------
    async def upload_model(
        self,
        model: str | PathLike[str] | Any,
        *,
        format: str | None = None,
        n_states: int | None = None,
        n_inputs: int | None = None,
        dynamics: str | None = None,
        signature: str | None = None,
        input_name: str | None = None,
        state_name: str | None = None,
        output_name: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> Model:
        """Upload a model file or torch module; see :meth:`fpf_client.Client.upload_model`."""
        hints = UploadHints(format, n_states, n_inputs, dynamics, signature, input_name, state_name, output_name)
        call = protocol.upload_model(model_file(model), hints)
        record = await self._send(call)
        return await self._await_model(record, timeout) if wait else record

    async def _await_model(self, record: Model, timeout: float | None) -> Model:
        deadline, delays = protocol.deadline_after(timeout), protocol.poll_delays()
        while record.status == "validating":
            if protocol.seconds_left(deadline) <= 0:
                raise protocol.timed_out(f"model {record.id[:12]} still validating", timeout)
            await asyncio.sleep(min(next(delays), protocol.seconds_left(deadline)))
            record = await self.get_model(record.id)
        return protocol.check_model_usable(record)

    async def get_model(self, model: Model | str) -> Model:
        """The model record of an id (or refresh a :class:`Model`)."""
        return await self._send(protocol.get_model(model_id(model)))

    async def list_models(self) -> list[Model]:
        """Every model on the service."""
        return await self._send(protocol.list_models())

    async def delete_model(self, model: Model | str) -> None:
        """Delete a model and its file."""
        await self._send(protocol.delete_model(model_id(model)))

    # --- jobs ----------------------------------------------------------------------------
    async def submit(
        self,
        model: Model | str | PathLike[str] | Any,
        initial_states: Any,
        inputs: Any = None,
        *,
        idempotency_key: str | None = None,
        cond_ids: Any = None,
        **options: Any,
    ) -> AsyncJob:
        """Queue a fixed-point search; see :meth:`fpf_client.Client.submit`."""
        option_values = options_payload(options)
        arrays = arrays_payload(initial_states, inputs, cond_ids)
        if is_local_model(model):
            model = await self.upload_model(model, n_states=arrays.n_states, n_inputs=arrays.n_inputs)
        key = submission_key(idempotency_key, self.retry_policy)
        record = await self._send(protocol.submit_job(model_id(model), arrays.npz, option_values, key))
        return AsyncJob(self, record)

    async def get_job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job."""
        return AsyncJob(self, await self._send(protocol.get_job(job_id)))

    async def list_jobs(self, status: str | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally only those with ``status``."""
        return await self._send(protocol.list_jobs(status))

    async def find_fixed_points(
        self,
        model: Model | str | PathLike[str] | Any,
        initial_states: Any,
        inputs: Any = None,
        *,
        progress: ProgressArg = True,
        timeout: float | None = None,
        **options: Any,
    ) -> FixedPoints:
        """Submit, wait and return the :class:`FixedPoints`."""
        job = await self.submit(model, initial_states, inputs, **options)
        await job.wait(progress=progress, timeout=timeout)
        return await job.result()

    async def _job_events(self, job_id: str, deadline: float) -> AsyncGenerator[JobRecord, None]:
        """Job records from the event stream until it ends or breaks; see
        :meth:`fpf_client.transport.HttpTransport.job_events`. Raises :class:`_NoEventStream` when the
        service streams no events."""
        while protocol.seconds_left(deadline) > 0:
            timeout = protocol.stream_timeout(self._http.timeout, deadline)
            try:
                async with self._http.stream(
                    "GET", protocol.job_events_path(job_id), headers={"Accept": "text/event-stream"}, timeout=timeout
                ) as response:
                    if protocol.is_stream_unavailable(response):
                        return
                    if not protocol.is_event_stream(response):
                        raise _NoEventStream
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            continue
                        record = protocol.event_record(event)
                        if record is not None:
                            yield record
                        if event.event == "end":
                            yield await self._send(protocol.get_job(job_id))
                    return
            except httpx.ReadTimeout:
                continue
            except httpx.TransportError:
                return


class AsyncJob:
    """A submitted job for asyncio code. ``status`` is the last one seen; ``await refresh()`` asks again."""

    def __init__(self, client: AsyncClient, record: JobRecord) -> None:
        self._client = client
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def status(self) -> str:
        """The status last seen (call :meth:`refresh` to ask the service)."""
        return self.record.status

    async def refresh(self) -> JobRecord:
        """Fetch the job's current record."""
        self.record = await self._client._send(protocol.get_job(self.id))
        return self.record

    async def wait(self, progress: ProgressArg = True, timeout: float | None = None) -> JobRecord:
        """Wait until the job stops and return its final record; see :meth:`fpf_client.Job.wait`."""
        deadline = protocol.deadline_after(timeout)
        with ProgressReporter(progress, self.id) as report, retry.until(deadline, report.note):
            async with aclosing(self._updates(deadline)) as updates:
                async for record in updates:
                    self.record = record
                    report(record)
                    if record.is_final:
                        return record
        raise protocol.timed_out(f"job {self.id} still {self.record.status}", timeout)

    async def _updates(self, deadline: float) -> AsyncGenerator[JobRecord, None]:
        """The job's records; see :meth:`fpf_client.Job._updates`."""
        yield await self.refresh()
        streams = True
        for delay in protocol.poll_delays(longest=2.0):
            if streams:
                try:
                    async with aclosing(self._client._job_events(self.id, deadline)) as events:
                        async for record in events:
                            yield record
                except _NoEventStream:
                    streams = False
            if protocol.seconds_left(deadline) <= 0:
                return
            await asyncio.sleep(min(delay, protocol.seconds_left(deadline)))
            yield await self.refresh()

    async def result(self, timeout: float | None = None) -> FixedPoints:
        """The fixed points, waiting until the job stops; raises JobFailed or JobCancelled otherwise."""
        record = self.record if self.record.is_final else await self.wait(progress=False, timeout=timeout)
        protocol.check_succeeded(record)
        return await self._client._send(protocol.job_result(self.id))

    async def cancel(self) -> JobRecord:
        """Ask the service to stop the job; returns its record."""
        await self._client._send(protocol.cancel_job(self.id))
        return await self.refresh()

    async def delete(self) -> None:
        """Remove the job and its files."""
        await self._client._send(protocol.delete_job(self.id))

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, status={self.record.status!r})"
