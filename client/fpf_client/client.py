"""The synchronous client: :class:`Client` and the :class:`Job` handle it returns."""

from __future__ import annotations

from collections.abc import Callable
from os import PathLike
from typing import Any

import httpx

from . import flows, protocol, retry
from .fixed_points import FixedPoints
from .flows import Flow, T
from .payloads import UploadHints, model_id
from .progress import ProgressArg, ProgressReporter
from .records import JobRecord, Model
from .rest import HttpTransport
from .retry import RetryPolicy
from .transport import Transport, default_url, open_transport, transport_kind


class Client:
    """A connection to an fpf service.

    Parameters
    ----------
    url : str, optional
        The gateway's base URL; defaults to ``$FPF_URL``, else ``http://127.0.0.1:8000``.
        ``grpc://host:port`` (or ``grpcs://`` for TLS) talks to the gRPC server instead.
    api_key : str, optional
        Sent as ``Authorization: Bearer <api_key>`` (gRPC: ``authorization`` metadata).
    timeout : float
        Seconds to wait for any one answer (waiting for a job has its own ``timeout``).
    transport : {"http", "grpc"}, optional
        Overrides the URL's scheme; with ``"grpc"`` the URL may be a bare ``host:port``.
        Both give the same records, the same exceptions and bit-identical results
        (gRPC needs ``pip install 'fpf-client[grpc]'``).
    retry_timeout : float
        Seconds a call keeps being retried while the service is unavailable (a restart, a Redis
        outage, ``503``, a refused connection) or over a quota (``429``, after its ``Retry-After``),
        with exponential backoff and jitter; ``0`` turns retries off. ``Job.wait(timeout=...)`` rides
        out outages until its own timeout instead. What it waits for is logged (logger ``fpf_client``).

    Examples
    --------
    >>> with Client() as client:                                   # doctest: +SKIP
    ...     fps = client.find_fixed_points("rnn.pt", states, inputs)
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
        self._transport: Transport = open_transport(self.url, self.transport, api_key, timeout, self.retry_policy)

    @property
    def _http(self) -> httpx.Client:
        """The httpx client of the REST transport (for event hooks)."""
        if not isinstance(self._transport, HttpTransport):
            raise AttributeError(f"a {self.transport} client has no HTTP connection")
        return self._transport.http

    def _run(self, flow: Flow[T]) -> T:
        return flows.run(self._transport, flow)

    def close(self) -> None:
        """Close the connection pool (or channel)."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, transport={self.transport!r})"

    # --- models --------------------------------------------------------------------------
    def upload_model(
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
        """Upload a model file or a torch module (scripted to TorchScript) and wait until it is ready.

        Parameters
        ----------
        model : path or torch.nn.Module
            A TorchScript, ONNX or SavedModel file (a SavedModel directory is packed as ``.tar.gz``),
            or a module with the step signature ``forward(u: (n, m), h: (n, d)) -> h_next``.
        format, n_states, n_inputs, dynamics : optional
            Hints the service checks with a dry run (see docs/api.md).
        signature, input_name, state_name, output_name : optional
            Which SavedModel signature to run and which ONNX/SavedModel tensors are u, h and
            the next state, for models whose names fpf cannot tell (docs/model-contract.md).
        wait : bool
            Return only once the service has validated the model.
        timeout : float, optional
            Give up waiting after this many seconds (``TimeoutError``).

        Raises
        ------
        InvalidModel
            With the service's reason, when it cannot use the model.
        """
        hints = UploadHints(format, n_states, n_inputs, dynamics, signature, input_name, state_name, output_name)
        return self._run(flows.upload_model(model, hints, wait, timeout))

    def get_model(self, model: Model | str) -> Model:
        """The model record of an id (or refresh a :class:`Model`)."""
        return self._transport.get_model(model_id(model))

    def list_models(self) -> list[Model]:
        """Every model on the service."""
        return self._transport.list_models()

    def delete_model(self, model: Model | str) -> None:
        """Delete a model and its file."""
        self._transport.delete_model(model_id(model))

    # --- jobs ----------------------------------------------------------------------------
    def submit(
        self,
        model: Model | str | PathLike[str] | Any,
        initial_states: Any,
        inputs: Any = None,
        *,
        idempotency_key: str | None = None,
        cond_ids: Any = None,
        **options: Any,
    ) -> Job:
        """Queue a fixed-point search and return its :class:`Job` at once.

        Parameters
        ----------
        model : Model, str, path or torch.nn.Module
            A model id or record, or a file or module to upload first (with the arrays'
            shapes as hints).
        initial_states : array-like, (n, n_states)
            Where the searches start (numpy, nested lists or torch tensors).
        inputs : array-like, (1 | n, n_inputs), optional
            The constant input of each search; zeros when absent.
        idempotency_key : str, optional
            Retrying with the same key and arrays returns the same job instead of a new one. Without
            one, a random key is sent (while retries are on), so that a submission retried after a
            lost answer never makes a second job.
        cond_ids : array-like of int, (n,), optional
            A label per initial state, reported as the points' ``cond_id``.
        **options
            :class:`~fpf_client.FinderOptions` fields, checked here before anything is sent.
        """
        flow = flows.submit(
            model,
            initial_states,
            inputs,
            idempotency_key=idempotency_key,
            cond_ids=cond_ids,
            options=options,
            policy=self.retry_policy,
        )
        return Job(self, self._run(flow))

    def get_job(self, job_id: str) -> Job:
        """A handle on an existing job."""
        return Job(self, self._transport.get_job(job_id))

    def list_jobs(self, status: str | None = None) -> list[JobRecord]:
        """Jobs, newest first, optionally only those with ``status``."""
        return self._transport.list_jobs(status)

    def find_fixed_points(
        self,
        model: Model | str | PathLike[str] | Any,
        initial_states: Any,
        inputs: Any = None,
        *,
        progress: ProgressArg = True,
        timeout: float | None = None,
        **options: Any,
    ) -> FixedPoints:
        """Submit, wait (with a progress bar in a terminal) and return the :class:`FixedPoints`;
        without ``progress``, one request waits for the job and fetches the result."""
        job = self.submit(model, initial_states, inputs, **options)
        if progress is not False:
            job.wait(progress=progress, timeout=timeout)
        return job.result(timeout=timeout)


class Job:
    """A submitted job: follow it, fetch its result, cancel or delete it.

    ``record`` is the last :class:`JobRecord` seen; :attr:`status` asks the service again.
    """

    def __init__(self, client: Client, record: JobRecord) -> None:
        self._client = client
        self.record = record

    @property
    def id(self) -> str:
        return self.record.id

    def refresh(self) -> JobRecord:
        """Fetch the job's current record."""
        self.record = self._client._transport.get_job(self.id)
        return self.record

    @property
    def status(self) -> str:
        """The current status: queued, running, succeeded, failed or cancelled (asks the service)."""
        return self.refresh().status

    def wait(self, progress: ProgressArg = True, timeout: float | None = None) -> JobRecord:
        """Block until the job stops and return its final record.

        Parameters
        ----------
        progress : bool or callable
            ``True`` draws a tqdm bar (only on a terminal); a callable gets every new
            :class:`JobRecord`. Updates come from the server-sent event stream, or from
            polling when the stream is unavailable.
        timeout : float, optional
            Raise ``TimeoutError`` after this many seconds (the job keeps running). Until then the
            wait rides out restarts of the gateway and outages of Redis, saying what it waits for;
            without a timeout, each outage for the client's ``retry_timeout``.
        """
        deadline = protocol.deadline_after(timeout)
        with ProgressReporter(progress, self.id) as report, retry.until(deadline, report.note):
            return self._client._run(flows.wait(self.id, self._seeing(report), deadline, timeout))

    def _seeing(self, report: ProgressReporter) -> Callable[[JobRecord], None]:
        """Keep each record the wait sees as :attr:`record`, and report it."""

        def see(record: JobRecord) -> None:
            self.record = record
            report(record)

        return see

    def result(self, timeout: float | None = None) -> FixedPoints:
        """The fixed points, waiting (without a bar) until the job stops.

        A job not known to have ended is fetched in one request that waits for it (a long poll,
        asked again until ``timeout``); :attr:`record` is not updated: :meth:`refresh` reads it.

        Raises
        ------
        JobFailed, JobCancelled
            When the job did not succeed.
        TimeoutError
            After ``timeout`` seconds; the job keeps running.
        """
        if self.record.is_final:
            protocol.check_succeeded(self.record)
            return self._client._transport.job_result(self.id)
        deadline = protocol.deadline_after(timeout)
        with retry.until(deadline):
            return self._client._run(flows.result(self.id, deadline, timeout))

    def cancel(self) -> JobRecord:
        """Ask the service to stop the job (a running one stops within seconds); returns its record."""
        self._client._transport.cancel_job(self.id)
        return self.refresh()

    def delete(self) -> None:
        """Remove the job and its files (a running job is cancelled first)."""
        self._client._transport.delete_job(self.id)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.record.status!r})"
