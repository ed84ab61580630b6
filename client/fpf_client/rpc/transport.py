"""The client's gRPC transport: the operations of :class:`fpf_client.transport.Transport` as RPCs.

``grpc://host:port`` opens a plaintext channel, ``grpcs://host:port`` a TLS one. The API key
travels as the ``authorization: Bearer KEY`` metadata; failures raise the same
:class:`~fpf_client.errors.FpfError` subclasses as over REST.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import grpc

from .. import protocol
from ..errors import InvalidRequest
from ..fixed_points import FixedPoints
from ..payloads import ArraysPayload, ModelFile, UploadHints
from ..records import JobRecord, Model
from . import codec
from .stubs import load

#: Bytes of a model file per UploadModel message.
UPLOAD_CHUNK_BYTES = 1 << 20


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
    """

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url
        target, tls = channel_target(url)
        self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials()) if tls else \
            grpc.insecure_channel(target)
        self.stub = load().pb2_grpc.FixedPointServiceStub(self.channel)
        self.pb2 = load().pb2
        self.metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self.timeout = timeout

    def _call(self, method: Callable[..., Any], request: Any, *, timeout: float | None = -1.0) -> Any:
        try:
            return method(request, timeout=self.timeout if timeout == -1.0 else timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise codec.error_of_rpc(exc, self.url) from exc

    def close(self) -> None:
        self.channel.close()

    # --- models -----------------------------------------------------------------------------
    def upload_model(self, model: ModelFile, hints: UploadHints) -> Model:
        header = self.pb2.ModelUploadHeader(filename=model.filename, **hints.given())

        def messages() -> Iterator[Any]:
            yield self.pb2.UploadModelRequest(header=header)
            for start in range(0, len(model.content), UPLOAD_CHUNK_BYTES):
                yield self.pb2.UploadModelRequest(chunk=model.content[start:start + UPLOAD_CHUNK_BYTES])

        return _model(self._call(self.stub.UploadModel, messages(), timeout=None))

    def get_model(self, model_id: str) -> Model:
        return _model(self._call(self.stub.GetModel, self.pb2.GetModelRequest(model_id=model_id)))

    def list_models(self) -> list[Model]:
        answer = self._call(self.stub.ListModels, self.pb2.ListModelsRequest())
        return [_model(message) for message in answer.models]

    def delete_model(self, model_id: str) -> None:
        self._call(self.stub.DeleteModel, self.pb2.DeleteModelRequest(model_id=model_id))

    # --- jobs --------------------------------------------------------------------------------
    def submit_job(self, model_id: str, arrays: ArraysPayload, options: dict[str, Any],
                   idempotency_key: str | None) -> JobRecord:
        inputs, cond_ids = arrays.arrays.get("inputs"), arrays.arrays.get("cond_ids")
        request = self.pb2.SubmitJobRequest(
            model_id=model_id, initial_states=codec.array_message(arrays.arrays["initial_states"]),
            inputs=None if inputs is None else codec.array_message(inputs),
            options_json=json.dumps(options), idempotency_key=idempotency_key or "",
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
        self._call(self.stub.DeleteJob, self.pb2.DeleteJobRequest(job_id=job_id))

    def job_result(self, job_id: str) -> FixedPoints:
        """Assemble the streamed arrays in place; equal, bit for bit, to the REST ``.npz``."""
        assembler = codec.ResultAssembler()
        stream = self._call(self.stub.GetResult, self.pb2.GetResultRequest(job_id=job_id), timeout=None)
        try:
            for chunk in stream:
                assembler.add(chunk)
        except grpc.RpcError as exc:
            raise codec.error_of_rpc(exc, self.url) from exc
        return FixedPoints.from_npz_arrays(assembler.finish())

    def job_events(self, job_id: str, deadline: float) -> Iterator[JobRecord]:
        """Job records from WatchJob until the job ends or the deadline passes; on any trouble the
        stream just ends, and the caller polls (as with REST's event stream)."""
        left = protocol.seconds_left(deadline)
        stream = self.stub.WatchJob(self.pb2.WatchJobRequest(job_id=job_id), metadata=self.metadata,
                                    timeout=None if math.isinf(left) else max(left, 0.0))
        try:
            for message in stream:
                yield _job(message)
        except grpc.RpcError:
            return
        finally:
            stream.cancel()


def _model(message: Any) -> Model:
    return Model.model_validate(codec.model_fields(message))


def _job(message: Any) -> JobRecord:
    return JobRecord.model_validate(codec.job_fields(message))
