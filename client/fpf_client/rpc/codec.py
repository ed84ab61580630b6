"""What travels over gRPC, both ways: arrays, model and job records, results and errors.

The server and the client share these functions, so a record, an array or an error means the
same on both ends. Records are converted from and to the REST API's JSON shapes (``ModelOut`` /
``JobOut`` on the server, :class:`~fpf_client.records.Model` / :class:`~fpf_client.records.JobRecord`
in the client), which keeps the two transports' answers equal field by field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
from google.protobuf import any_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import (
    ErrorCode,
    FpfError,
    InvalidArray,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthenticated,
)
from .stubs import load

#: ``ErrorInfo.domain`` of fpf's errors.
ERROR_DOMAIN = "fpf.dev"

#: The gRPC status each error code is answered with (``ErrorInfo.reason`` carries the code itself).
GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.METHOD_NOT_ALLOWED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.INVALID_ARRAY: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.SHAPE_MISMATCH: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NON_FINITE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_OPTIONS: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.INVALID_MODEL: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.VALIDATION_TIMEOUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.MODEL_NOT_READY: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.JOB_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.JOB_NOT_FINISHED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.JOB_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.JOB_CANCELLED: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.IDEMPOTENCY_CONFLICT: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.QUOTA_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.TIME_LIMIT_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.DEVICE_UNAVAILABLE: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RESULT_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

#: Problem documents larger than this are cut down to code and detail: trailers are small (8 KiB).
_MAX_PROBLEM_CHARS = 4000


# --- errors ------------------------------------------------------------------------------------
def status_of_problem(problem: Mapping[str, Any]) -> grpc.Status:
    """The gRPC status of an RFC 9457 problem document, for ``context.abort_with_status``."""
    code = ErrorCode(problem["code"])
    text = json.dumps(problem)
    if len(text) > _MAX_PROBLEM_CHARS:
        text = json.dumps({"code": code.value, "detail": str(problem.get("detail", ""))[: _MAX_PROBLEM_CHARS // 2]})
    info = error_details_pb2.ErrorInfo(reason=code.value, domain=ERROR_DOMAIN, metadata={"problem": text})
    packed = any_pb2.Any()
    packed.Pack(info)
    message = str(problem.get("detail", code.title))[: _MAX_PROBLEM_CHARS // 2]
    return rpc_status.to_status(status_pb2.Status(code=GRPC_STATUS[code].value[0], message=message, details=[packed]))


def error_of_rpc(error: grpc.RpcError, target: str) -> FpfError:
    """The :class:`FpfError` subclass a failed call stands for (the same class REST raises).

    Answers without fpf's ``ErrorInfo`` (the server unreachable, a message over gRPC's size
    limit, a proxy) are mapped from the gRPC status code.
    """
    problem = _problem_in(error)
    if problem is not None:
        return FpfError.from_problem(problem)
    code, details = error.code(), error.details() or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceUnavailable(f"cannot reach the fpf service at {target}: {details or code.name}")
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return PayloadTooLarge(details)
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(details)
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return NotFound(f"{target} does not serve this call: {details}")
    return FpfError(f"gRPC {code.name} from {target}: {details}")


def answered_by_fpf(error: grpc.RpcError) -> bool:
    """Whether a failed call carries fpf's own problem (the server answered), not a transport failure."""
    return _problem_in(error) is not None


def _problem_in(error: grpc.RpcError) -> dict[str, Any] | None:
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                if "problem" in info.metadata:
                    problem: dict[str, Any] = json.loads(info.metadata["problem"])
                    return problem
                return {"code": info.reason, "detail": status.message}
    return None


# --- arrays ------------------------------------------------------------------------------------
def array_message(array: Any) -> Any:
    """An ``Array`` message: dtype, shape and raw little-endian C-order bytes."""
    array = np.asarray(array)
    little = array.dtype.newbyteorder("<")
    data = np.ascontiguousarray(array, dtype=little)
    return load().pb2.Array(dtype=little.str, shape=list(data.shape), data=data.tobytes())


def array_of_message(message: Any, name: str, *, max_elements: int | None = None) -> np.ndarray:
    """The (read-only) array an ``Array`` message describes.

    Raises
    ------
    InvalidArray
        For an unknown or object dtype, a negative dimension, or data of the wrong length.
    PayloadTooLarge
        For more than ``max_elements`` elements.
    """
    try:
        dtype = np.dtype(message.dtype)
    except TypeError as exc:
        raise InvalidArray(f"{name} has an unknown dtype {message.dtype!r}", field=name) from exc
    if dtype.hasobject:
        raise InvalidArray(f"{name} holds Python objects; send a numeric array", field=name)
    shape = tuple(int(size) for size in message.shape)
    if any(size < 0 for size in shape):
        raise InvalidArray(f"{name} has a negative dimension in shape {shape}", field=name)
    n_elements = int(np.prod(shape, dtype=np.int64))
    if max_elements is not None and n_elements > max_elements:
        raise PayloadTooLarge(
            f"{name} has {n_elements} elements; the limit is {max_elements}", field=name, limit=max_elements
        )
    if len(message.data) != n_elements * dtype.itemsize:
        raise InvalidArray(
            f"{name} has {len(message.data)} bytes of data; shape {shape} of {dtype.str} "
            f"needs {n_elements * dtype.itemsize}",
            field=name,
        )
    return np.frombuffer(message.data, dtype=dtype).reshape(shape)


class ResultAssembler:
    """Rebuilds the arrays of a ``GetResult`` stream in place, one chunk at a time.

    Each array is allocated once, at its first chunk, so the peak memory is the result
    itself plus one message.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self._name: str | None = None
        self._bytes: np.ndarray | None = None
        self._filled = 0

    def add(self, chunk: Any) -> None:
        """Take the next ``ResultChunk``."""
        if chunk.dtype:
            self._close()
            array = np.empty(tuple(chunk.shape), dtype=np.dtype(chunk.dtype))
            self.arrays[chunk.name] = array
            self._name, self._bytes, self._filled = chunk.name, array.reshape(-1).view(np.uint8), 0
        if chunk.name != self._name or chunk.offset != self._filled or self._bytes is None:
            raise FpfError(f"the result stream is out of order at {chunk.name!r}, byte {chunk.offset}")
        end = self._filled + len(chunk.data)
        if end > self._bytes.size:
            raise FpfError(f"the result stream sent too many bytes for {chunk.name!r}")
        self._bytes[self._filled : end] = np.frombuffer(chunk.data, dtype=np.uint8)
        self._filled = end

    def _close(self) -> None:
        if self._bytes is not None and self._filled != self._bytes.size:
            raise FpfError(f"the result stream ended {self._name!r} after {self._filled} of {self._bytes.size} bytes")

    def finish(self) -> dict[str, np.ndarray]:
        """The arrays by name, once the stream has ended."""
        self._close()
        return self.arrays


# --- records -------------------------------------------------------------------------------------
def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _datetime(message: Any, name: str) -> datetime | None:
    return getattr(message, name).ToDatetime(tzinfo=UTC) if message.HasField(name) else None


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def _enum_value(enum: Any, prefix: str, status: Any) -> int:
    return int(enum.Value(f"{prefix}{str(getattr(status, 'value', status)).upper()}"))


def _enum_text(enum: Any, prefix: str, value: int) -> str:
    return str(enum.Name(value)).removeprefix(prefix).lower()


def _json_or_empty(value: Any) -> str:
    return "" if value is None else json.dumps(value)


def model_message(model: Mapping[str, Any]) -> Any:
    """A ``Model`` message from the REST model record (``ModelOut.model_dump()``)."""
    pb2 = load().pb2
    return pb2.Model(
        id=model["id"],
        status=_enum_value(pb2.ModelStatus, "MODEL_STATUS_", model["status"]),
        format=model.get("format"),
        filename=model.get("filename"),
        size_bytes=model["size_bytes"],
        n_states=model.get("n_states"),
        n_inputs=model.get("n_inputs"),
        dynamics=model["dynamics"],
        created_at=_timestamp(model.get("created_at")),
        error_json=_json_or_empty(model.get("error")),
        signature=model.get("signature"),
        input_name=model.get("input_name"),
        state_name=model.get("state_name"),
        output_name=model.get("output_name"),
        validation_json=_json_or_empty(model.get("validation")),
    )


def model_fields(message: Any) -> dict[str, Any]:
    """The REST model record of a ``Model`` message."""
    pb2 = load().pb2
    return {
        "id": message.id,
        "status": _enum_text(pb2.ModelStatus, "MODEL_STATUS_", message.status),
        "format": _optional(message, "format"),
        "filename": _optional(message, "filename"),
        "size_bytes": message.size_bytes,
        "n_states": _optional(message, "n_states"),
        "n_inputs": _optional(message, "n_inputs"),
        "dynamics": message.dynamics,
        "created_at": _datetime(message, "created_at"),
        "error": json.loads(message.error_json) if message.error_json else None,
        "signature": _optional(message, "signature"),
        "input_name": _optional(message, "input_name"),
        "state_name": _optional(message, "state_name"),
        "output_name": _optional(message, "output_name"),
        "validation": json.loads(message.validation_json) if message.validation_json else None,
    }


def job_status_value(status: str) -> int:
    """The ``JobStatus`` enum value of a status name (``queued``, ...)."""
    return _enum_value(load().pb2.JobStatus, "JOB_STATUS_", status)


def job_status_text(value: int) -> str:
    return _enum_text(load().pb2.JobStatus, "JOB_STATUS_", value)


def job_message(job: Mapping[str, Any]) -> Any:
    """A ``Job`` message from the REST job record (``JobOut.model_dump()``)."""
    pb2 = load().pb2
    progress = job.get("progress")
    timings = job.get("timings") or {}
    return pb2.Job(
        id=job["id"],
        model_id=job["model_id"],
        status=job_status_value(job["status"]),
        n_initial_states=job["n_initial_states"],
        options_json=json.dumps(job["options"]),
        progress=None if progress is None else pb2.Progress(**progress),
        created_at=_timestamp(job.get("created_at")),
        started_at=_timestamp(job.get("started_at")),
        finished_at=_timestamp(job.get("finished_at")),
        timings=pb2.Timings(**timings),
        attempts=job["attempts"],
        cancel_requested=job["cancel_requested"],
        error_json=_json_or_empty(job.get("error")),
        partial=bool(job.get("partial")),
        batch_size=job.get("batch_size"),
    )


def job_fields(message: Any) -> dict[str, Any]:
    """The REST job record of a ``Job`` message."""
    progress = None
    if message.HasField("progress"):
        p = message.progress
        progress = {
            "phase": p.phase,
            "iteration": p.iteration,
            "n_total": p.n_total,
            "n_converged": p.n_converged,
            "fraction_converged": p.fraction_converged,
            "q_median": _optional(p, "q_median"),
            "q_max": _optional(p, "q_max"),
        }
    timings = {name: _optional(message.timings, name) for name in ("queued_s", "engine_s", "total_s")}
    return {
        "id": message.id,
        "model_id": message.model_id,
        "status": job_status_text(message.status),
        "n_initial_states": message.n_initial_states,
        "options": json.loads(message.options_json or "{}"),
        "progress": progress,
        "created_at": _datetime(message, "created_at"),
        "started_at": _datetime(message, "started_at"),
        "finished_at": _datetime(message, "finished_at"),
        "timings": timings,
        "attempts": message.attempts,
        "cancel_requested": message.cancel_requested,
        "error": json.loads(message.error_json) if message.error_json else None,
        "partial": message.partial,
        "batch_size": _optional(message, "batch_size"),
    }
