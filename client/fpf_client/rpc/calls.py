"""The gRPC API as data: each operation is an :class:`RpcCall` (which RPC, what to send, how to read
the answer), the gRPC twin of :mod:`fpf_client.protocol`.

:class:`~fpf_client.rpc.transport.GrpcTransport` and :class:`~fpf_client.rpc.transport.AsyncGrpcTransport`
only differ in how they send a call, so every request and every answer is built and decoded once, here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..errors import ErrorCode, InvalidRequest
from ..payloads import ArraysPayload, ModelFile, UploadHints
from ..records import JobRecord, Model
from . import codec
from .stubs import load

T = TypeVar("T")

#: Bytes of a model file per UploadModel message.
UPLOAD_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RpcCall(Generic[T]):
    """One RPC: the stub method's name, a function making its request (a stream of upload messages is
    made anew for each attempt), and the function that turns its answer into a value."""

    method: str
    request: Callable[[], Any]
    decode: Callable[[Any], T]
    #: Whether the call has the client's per-call deadline; streams of unknown length have none,
    #: like REST's per-read timeout.
    deadline: bool = True
    #: Codes that, answered to a retry, mean an earlier attempt did the work (a delete's NOT_FOUND).
    done_if: tuple[ErrorCode, ...] = ()

    @property
    def what(self) -> str:
        """The call, for log lines."""
        return f"gRPC {self.method}"


def model_of(message: Any) -> Model:
    return Model.model_validate(codec.model_fields(message))


def job_of(message: Any) -> JobRecord:
    return JobRecord.model_validate(codec.job_fields(message))


def _nothing(message: Any) -> None:
    return None


# --- models ----------------------------------------------------------------------------------
def upload_model(model: ModelFile, hints: UploadHints) -> RpcCall[Model]:
    pb2 = load().pb2
    header = pb2.ModelUploadHeader(filename=model.filename, **hints.given())

    def messages() -> Iterator[Any]:
        yield pb2.UploadModelRequest(header=header)
        for start in range(0, len(model.content), UPLOAD_CHUNK_BYTES):
            yield pb2.UploadModelRequest(chunk=model.content[start : start + UPLOAD_CHUNK_BYTES])

    return RpcCall("UploadModel", messages, model_of, deadline=False)


def get_model(model_id: str) -> RpcCall[Model]:
    return RpcCall("GetModel", lambda: load().pb2.GetModelRequest(model_id=model_id), model_of)


def list_models() -> RpcCall[list[Model]]:
    return RpcCall(
        "ListModels", lambda: load().pb2.ListModelsRequest(), lambda answer: [model_of(m) for m in answer.models]
    )


def delete_model(model_id: str) -> RpcCall[None]:
    return RpcCall(
        "DeleteModel",
        lambda: load().pb2.DeleteModelRequest(model_id=model_id),
        _nothing,
        done_if=(ErrorCode.MODEL_NOT_FOUND,),
    )


# --- jobs ------------------------------------------------------------------------------------
def submit_job(
    model_id: str, arrays: ArraysPayload, options: dict[str, Any], idempotency_key: str | None
) -> RpcCall[JobRecord]:
    inputs, cond_ids = arrays.arrays.get("inputs"), arrays.arrays.get("cond_ids")
    request = load().pb2.SubmitJobRequest(
        model_id=model_id,
        initial_states=codec.array_message(arrays.arrays["initial_states"]),
        inputs=None if inputs is None else codec.array_message(inputs),
        options_json=json.dumps(options),
        idempotency_key=idempotency_key or "",
        cond_ids=None if cond_ids is None else codec.array_message(cond_ids),
    )
    return RpcCall("SubmitJob", lambda: request, job_of)


def get_job(job_id: str) -> RpcCall[JobRecord]:
    return RpcCall("GetJob", lambda: load().pb2.GetJobRequest(job_id=job_id), job_of)


def list_jobs(status: str | None) -> RpcCall[list[JobRecord]]:
    """Jobs, optionally only those with ``status``.

    Raises
    ------
    InvalidRequest
        For a status the API does not know, as the gateway answers over REST.
    """
    request = load().pb2.ListJobsRequest()
    if status is not None:
        try:
            request.status = codec.job_status_value(status)
        except ValueError:
            raise InvalidRequest(f"unknown job status {status!r}", field="status") from None
    return RpcCall("ListJobs", lambda: request, lambda answer: [job_of(m) for m in answer.jobs])


def cancel_job(job_id: str) -> RpcCall[None]:
    return RpcCall("CancelJob", lambda: load().pb2.CancelJobRequest(job_id=job_id), _nothing)


def delete_job(job_id: str) -> RpcCall[None]:
    return RpcCall(
        "DeleteJob", lambda: load().pb2.DeleteJobRequest(job_id=job_id), _nothing, done_if=(ErrorCode.JOB_NOT_FOUND,)
    )


def get_result_request(job_id: str, wait_s: float = 0.0) -> Any:
    """The request of the ``GetResult`` stream, whose chunks :class:`~fpf_client.rpc.codec.ResultAssembler`
    joins; the server waits up to ``wait_s`` seconds for the job to end first."""
    return load().pb2.GetResultRequest(job_id=job_id, wait_s=max(wait_s, 0.0))


def watch_job_request(job_id: str) -> Any:
    """The request of the ``WatchJob`` stream of :class:`~fpf_client.rpc.codec.job_fields` records."""
    return load().pb2.WatchJobRequest(job_id=job_id)
