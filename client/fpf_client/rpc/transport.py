"""The client's gRPC transport: the operations of :class:`fpf_client.transport.Transport` as RPCs.

``grpc://host:port`` opens a plaintext channel, ``grpcs://host:port`` a TLS one. The API key
travels as the ``authorization: Bearer KEY`` metadata; failures raise the same
:class:`~fpf_client.errors.FpfError` subclasses as over REST.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import grpc

from .. import protocol, retry
from ..errors import ErrorCode, InvalidRequest
from ..fixed_points import FixedPoints
from ..payloads import ArraysPayload, ModelFile, UploadHints
from ..records import JobRecord, Model
from ..retry import RetryPolicy
from . import codec
from .stubs import load

#: Bytes of a model file per UploadModel message.
UPLOAD_CHUNK_BYTES = 1 << 20
#: gRPC's reconnection backoff grows to two minutes by default: a restarted server would stay
#: unreached long after it is back. The client's own retries pace the attempts instead.
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
)


def channel_target(url: str) -> tuple[str, bool]:
    """``(host:port, use TLS)`` of ``grpc://host:port``, ``grpcs://host:port`` or a bare ``host:port``."""
    parts = urlsplit(url if "//" in url else f"grpc://{url}")
    if not parts.hostname or parts.port is None:
        raise ValueError(f"a gRPC address needs a host and a port, like grpc://127.0.0.1:50051; got {url!r}")
    return parts.netloc, parts.scheme in ("grpcs", "https")


class GrpcTransport:
    """A channel to the fpf gRPC server and the calls made over it.

    Parameters
    ----------
    url : str
        ``grpc://host:port`` (or ``grpcs://`` for TLS).
    api_key : str, optional
        Sent as ``authorization: Bearer <api_key>`` metadata.
    timeout : float
        Deadline of each unary call, in seconds; streams (uploads, results, watching) have none
        of their own, like REST's per-read timeout.
    retry_policy : RetryPolicy
        How calls are retried through outages (every call here is idempotent: submissions carry
        an idempotency key).
    """

    def __init__(
        self, url: str, api_key: str | None, timeout: float, retry_policy: RetryPolicy = RetryPolicy()
    ) -> None:
        self.url = url
        self.retry_policy = retry_policy
        #: Whether the server has ever answered: until then a refused connection is a wrong address.
        self.reached = False
        target, tls = channel_target(url)
        self.channel = (
            grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
            if tls
            else grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        )
        self.stub = load().pb2_grpc.FixedPointServiceStub(self.channel)
        self.pb2 = load().pb2
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout

    def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        *,
        timeout: float | None = -1.0,
        done_if: tuple[ErrorCode, ...] = (),
    ) -> Any:
        """A unary call, retried through outages; ``request`` may be a function making the request
        (a stream of upload messages is made anew for each attempt)."""

        def send() -> Any:
            try:
                answer = method(
                    request() if callable(request) else request,
                    timeout=self.timeout if timeout == -1.0 else timeout,
                    metadata=self.metadata,
                )
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            self.reached = True
            return answer

        return retry.call(self.retry_policy, send, f"gRPC {_name(method)}", done_if=done_if, seen=lambda: self.reached)

    def _error(self, exc: grpc.RpcError) -> Exception:
        """The FpfError of a failed call, noting whether the server answered it at all."""
        error = codec.error_of_rpc(exc, self.url)
        if not codec.answered_by_fpf(exc) and exc.code() is grpc.StatusCode.UNAVAILABLE:
            return retry.mark_unreached(error)
        self.reached = True
        return error

    def close(self) -> None:
        self.channel.close()

    # --- models -----------------------------------------------------------------------------
    def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        header = self.pb2.ModelUploadHeader(filename=model.filename, **hints.given())

        def messages() -> Iterator[Any]:
            yield self.pb2.UploadModelRequest(header=header)
            for start in range(0, len(model.content), UPLOAD_CHUNK_BYTES):
                yield self.pb2.UploadModelRequest(chunk=model.content[start : start + UPLOAD_CHUNK_BYTES])

        return _model(self._call(self.stub.UploadModel, messages, timeout=None))

    def get_model(self, model_id: str) -> Model:
        return _model(self._call(self.stub.GetModel, self.pb2.GetModelRequest(model_id=model_id)))

    def list_models(self) -> list[Model]:
        answer = self._call(self.stub.ListModels, self.pb2.ListModelsRequest())
        return [_model(message) for message in answer.models]

    def delete_model(self, model_id: str) -> None:
        self._call(
            self.stub.DeleteModel, self.pb2.DeleteModelRequest(model_id=model_id), done_if=(ErrorCode.MODEL_NOT_FOUND,)
        )

    # --- jobs --------------------------------------------------------------------------------
    def submit_job(
        self, model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
    ) -> JobRecord:
        inputs, cond_ids = arrays.arrays.get("inputs"), arrays.arrays.get("cond_ids")
        request = self.pb2.SubmitJobRequest(
            model_id=model_id,
            initial_states=codec.array_message(arrays.arrays["initial_states"]),
            inputs=None if inputs is None else codec.array_message(inputs),
            options_json=json.dumps(options),
            idempotency_key=idempotency_key or "",
            cond_ids=None if cond_ids is None else codec.array_message(cond_ids),
        )
        return _job(self._call(self.stub.SubmitJob, request))

    def get_job(self, job_id: str) -> JobRecord:
        return _job(self._call(self.stub.GetJob, self.pb2.GetJobRequest(job_id=job_id)))

    def list_jobs(self, status: str | None) -> list[JobRecord]:
        request = self.pb2.ListJobsRequest()
        if status is not None:
            try:
                request.status = codec.job_status_value(status)
            except ValueError:
                raise InvalidRequest(f"unknown job status {status!r}", field="status") from None
        return [_job(message) for message in self._call(self.stub.ListJobs, request).jobs]

    def cancel_job(self, job_id: str) -> None:
        self._call(self.stub.CancelJob, self.pb2.CancelJobRequest(job_id=job_id))

    def delete_job(self, job_id: str) -> None:
        self._call(self.stub.DeleteJob, self.pb2.DeleteJobRequest(job_id=job_id), done_if=(ErrorCode.JOB_NOT_FOUND,))

    def job_result(self, job_id: str) -> FixedPoints:
        """Assemble the streamed arrays in place; equal, bit for bit, to the REST ``.npz``. A stream
        broken by an outage is fetched again from its start."""

        def fetch() -> FixedPoints:
            assembler = codec.ResultAssembler()
            stream = self.stub.GetResult(self.pb2.GetResultRequest(job_id=job_id), metadata=self.metadata)
            try:
                for chunk in stream:
                    assembler.add(chunk)
            except grpc.RpcError as exc:
                raise self._error(exc) from exc
            return FixedPoints.from_npz_arrays(assembler.finish())

        return retry.call(self.retry_policy, fetch, "gRPC GetResult", seen=lambda: self.reached)

    def job_events(self, job_id: str, deadline: float) -> Generator[JobRecord, None, bool]:
        """Job records from WatchJob until the job ends or the deadline passes; on any trouble the
        stream just ends (True: the caller checks the job and may watch again, as with REST)."""
        left = protocol.seconds_left(deadline)
        stream = self.stub.WatchJob(
            self.pb2.WatchJobRequest(job_id=job_id),
            metadata=self.metadata,
            timeout=None if math.isinf(left) else max(left, 0.0),
        )
        try:
            for message in stream:
                yield _job(message)
        except grpc.RpcError:
            return True
        finally:
            stream.cancel()
        return True


def _name(method: Any) -> str:
    """The RPC's name (``/fpf.v1.FixedPointService/GetJob`` -> ``GetJob``), for log lines."""
    name = getattr(method, "_method", b"")
    name = name.decode() if isinstance(name, bytes) else str(name)
    return name.rsplit("/", 1)[-1] or "call"


def _model(message: Any) -> Model:
    return Model.model_validate(codec.model_fields(message))


def _job(message: Any) -> JobRecord:
    return JobRecord.model_validate(codec.job_fields(message))
