"""The asyncio client: :class:`AsyncClient` and :class:`AsyncJob`, the coroutine twins of Client and Job.

Both clients run the same job logic (:mod:`fpf_client.flows`) over the same kind of transport
(:mod:`fpf_client.transport`), REST or gRPC; only sending and sleeping differ.
"""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any

from . import flows, protocol, retry
from .fixed_points import FixedPoints
from .flows import Flow, T
from .payloads import UploadHints, model_id
from .progress import ProgressArg, ProgressReporter
from .records import JobRecord, Model
from .retry import RetryPolicy
from .transport import AsyncTransport, default_url, open_async_transport, transport_kind


class AsyncClient:
    """A connection to an fpf service for asyncio code; see :class:`fpf_client.Client` for the parameters.

    ``grpc://host:port`` (or ``transport="grpc"``) talks to the gRPC server over ``grpc.aio``, with
    the same records, exceptions, retries and results as REST.

    Examples
    --------
    >>> async with AsyncClient() as client:                              # doctest: +SKIP
    ...     fps = await client.find_fixed_points(model_id, states, inputs)
    >>> async with AsyncClient("grpc://127.0.0.1:50051") as client:      # doctest: +SKIP
    ...     fps = await client.find_fixed_points(model_id, states, inputs)
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        transport: str | None = None,
        retry_timeout: float = RetryPolicy.timeout,
    ) -> None:
        self.url = default_url(url, transport).rstrip("/")
        self.transport = transport_kind(self.url, transport)
        self.retry_policy = RetryPolicy(timeout=retry_timeout)
        self._transport: AsyncTransport = open_async_transport(
            self.url, self.transport, api_key, timeout, self.retry_policy
        )

    async def _run(self, flow: Flow[T]) -> T:
        return await flows.arun(self._transport, flow)

    async def aclose(self) -> None:
        """Close the connection pool (or channel)."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r}, transport={self.transport!r})"

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
        return await self._run(flows.upload_model(model, hints, wait, timeout))

    async def get_model(self, model: Model | str) -> Model:
        """The model record of an id (or refresh a :class:`Model`)."""
        return await self._transport.get_model(model_id(model))

    async def list_models(self) -> list[Model]:
        """Every model on the service."""
        return await self._transport.list_models()

    async def delete_model(self, model: Model | str) -> None:
        """Delete a model and its file."""
        await self._transport.delete_model(model_id(model))

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
        flow = flows.submit(
            model,
            initial_states,
            inputs,
            idempotency_key=idempotency_key,
            cond_ids=cond_ids,
            options=options,
            policy=self.retry_policy,
        )
        return AsyncJob(self, await self._run(flow))

    async def get_job(self, job_id: str) -> AsyncJob:
        """A handle on an existing job."""
        return AsyncJob(self, await self._transport.get_job(job_id))

    async def list_jobs(self, status: str | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally only those with ``status``."""
        return await self._transport.list_jobs(status)

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
        """Submit, wait and return the :class:`FixedPoints`, as :meth:`fpf_client.Client.find_fixed_points` does."""
        job = await self.submit(model, initial_states, inputs, **options)
        if progress is not False:
            await job.wait(progress=progress, timeout=timeout)
        return await job.result(timeout=timeout)


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
        self.record = await self._client._transport.get_job(self.id)
        return self.record

    async def wait(self, progress: ProgressArg = True, timeout: float | None = None) -> JobRecord:
        """Wait until the job stops and return its final record; see :meth:`fpf_client.Job.wait`."""
        deadline = protocol.deadline_after(timeout)
        with ProgressReporter(progress, self.id) as report, retry.until(deadline, report.note):
            return await self._client._run(flows.wait(self.id, self._seeing(report), deadline, timeout))

    def _seeing(self, report: ProgressReporter) -> Callable[[JobRecord], None]:
        """Keep each record the wait sees as :attr:`record`, and report it."""

        def see(record: JobRecord) -> None:
            self.record = record
            report(record)

        return see

    async def result(self, timeout: float | None = None) -> FixedPoints:
        """The fixed points, waiting until the job stops, as :meth:`fpf_client.Job.result` fetches them;
        raises JobFailed or JobCancelled otherwise."""
        if self.record.is_final:
            protocol.check_succeeded(self.record)
            return await self._client._transport.job_result(self.id)
        deadline = protocol.deadline_after(timeout)
        with retry.until(deadline):
            return await self._client._run(flows.result(self.id, deadline, timeout))

    async def cancel(self) -> JobRecord:
        """Ask the service to stop the job; returns its record."""
        await self._client._transport.cancel_job(self.id)
        return await self.refresh()

    async def delete(self) -> None:
        """Remove the job and its files."""
        await self._client._transport.delete_job(self.id)

    def __repr__(self) -> str:
        return f"AsyncJob(id={self.id!r}, status={self.record.status!r})"
