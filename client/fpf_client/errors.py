"""Error codes shared by the REST gateway, the gRPC server and the client.

Every failure the service reports carries one of these stable, machine-readable
codes: in the ``code`` member of an RFC 9457 problem document over HTTP, as the
``ErrorInfo.reason`` over gRPC, and as the exception class the client raises.
"""

from __future__ import annotations

from enum import Enum
from typing import Any


class ErrorCode(str, Enum):
    """Stable error codes and the HTTP status each maps to."""

    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    INVALID_ARRAY = "invalid_array"
    SHAPE_MISMATCH = "shape_mismatch"
    NON_FINITE = "non_finite"
    INVALID_OPTIONS = "invalid_options"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INVALID_MODEL = "invalid_model"
    VALIDATION_TIMEOUT = "validation_timeout"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_NOT_READY = "model_not_ready"
    JOB_NOT_FOUND = "job_not_found"
    JOB_NOT_FINISHED = "job_not_finished"
    JOB_FAILED = "job_failed"
    JOB_CANCELLED = "job_cancelled"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    UNAUTHENTICATED = "unauthenticated"
    QUOTA_EXCEEDED = "quota_exceeded"
    TIME_LIMIT_EXCEEDED = "time_limit_exceeded"
    DEVICE_UNAVAILABLE = "device_unavailable"
    RESULT_TOO_LARGE = "result_too_large"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL = "internal"

    @property
    def http_status(self) -> int:
        """The HTTP status code this error is served with."""
        return _HTTP_STATUS[self]

    @property
    def title(self) -> str:
        """A short, human-readable summary of the problem type."""
        return self.value.replace("_", " ").capitalize()


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.INVALID_ARRAY: 422,
    ErrorCode.SHAPE_MISMATCH: 422,
    ErrorCode.NON_FINITE: 422,
    ErrorCode.INVALID_OPTIONS: 422,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.INVALID_MODEL: 422,
    ErrorCode.VALIDATION_TIMEOUT: 422,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_READY: 409,
    ErrorCode.JOB_NOT_FOUND: 404,
    ErrorCode.JOB_NOT_FINISHED: 409,
    ErrorCode.JOB_FAILED: 409,
    ErrorCode.JOB_CANCELLED: 409,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.TIME_LIMIT_EXCEEDED: 422,
    ErrorCode.DEVICE_UNAVAILABLE: 422,
    ErrorCode.RESULT_TOO_LARGE: 413,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}


class FpfError(Exception):
    """Base class of every error fpf reports, on the server and in the client.

    Parameters
    ----------
    detail : str
        What went wrong, for a person.
    code : ErrorCode, optional
        Overrides the class's code (used when decoding an unknown subclass).
    extra : dict, optional
        Extension members of the problem document (e.g. ``field``, ``limit``).
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, detail: str, *, code: ErrorCode | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra

    @property
    def status(self) -> int:
        return self.code.http_status

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """Render as an RFC 9457 problem document."""
        problem: dict[str, Any] = {
            "type": f"https://fpf.dev/errors/{self.code.value}",
            "title": self.code.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code.value,
        }
        if instance:
            problem["instance"] = instance
        problem.update(self.extra)
        return problem

    @classmethod
    def from_problem(cls, problem: dict[str, Any]) -> "FpfError":
        """Rebuild the matching exception from a problem document."""
        reserved = {"type", "title", "status", "detail", "code", "instance"}
        extra = {k: v for k, v in problem.items() if k not in reserved}
        try:
            code = ErrorCode(problem.get("code"))
        except ValueError:
            code = ErrorCode.INTERNAL
        return ERROR_CLASSES.get(code, FpfError)(
            str(problem.get("detail") or problem.get("title") or "unknown error"), code=code, **extra
        )

    def __str__(self) -> str:
        return f"[{self.code.value}] {self.detail}"


def _error_class(name: str, code: ErrorCode, base: type[FpfError] = FpfError) -> type[FpfError]:
    return type(name, (base,), {"code": code, "__doc__": f"Raised for error code ``{code.value}``."})


class InvalidRequest(FpfError):
    """The request itself is malformed (base of the input errors)."""

    code = ErrorCode.INVALID_REQUEST


InvalidArray = _error_class("InvalidArray", ErrorCode.INVALID_ARRAY, InvalidRequest)
ShapeMismatch = _error_class("ShapeMismatch", ErrorCode.SHAPE_MISMATCH, InvalidRequest)
NonFinite = _error_class("NonFinite", ErrorCode.NON_FINITE, InvalidRequest)
InvalidOptions = _error_class("InvalidOptions", ErrorCode.INVALID_OPTIONS, InvalidRequest)
PayloadTooLarge = _error_class("PayloadTooLarge", ErrorCode.PAYLOAD_TOO_LARGE, InvalidRequest)
UnsupportedMediaType = _error_class("UnsupportedMediaType", ErrorCode.UNSUPPORTED_MEDIA_TYPE, InvalidRequest)
InvalidModel = _error_class("InvalidModel", ErrorCode.INVALID_MODEL, InvalidRequest)
#: A model whose loading and dry run did not end within the validation time limit: it is invalid.
ValidationTimeout = _error_class("ValidationTimeout", ErrorCode.VALIDATION_TIMEOUT, InvalidModel)
IdempotencyConflict = _error_class("IdempotencyConflict", ErrorCode.IDEMPOTENCY_CONFLICT, InvalidRequest)
NotFound = _error_class("NotFound", ErrorCode.NOT_FOUND)
MethodNotAllowed = _error_class("MethodNotAllowed", ErrorCode.METHOD_NOT_ALLOWED)
ModelNotFound = _error_class("ModelNotFound", ErrorCode.MODEL_NOT_FOUND)
ModelNotReady = _error_class("ModelNotReady", ErrorCode.MODEL_NOT_READY)
JobNotFound = _error_class("JobNotFound", ErrorCode.JOB_NOT_FOUND)
JobNotFinished = _error_class("JobNotFinished", ErrorCode.JOB_NOT_FINISHED)
JobFailed = _error_class("JobFailed", ErrorCode.JOB_FAILED)
JobCancelled = _error_class("JobCancelled", ErrorCode.JOB_CANCELLED)
Unauthenticated = _error_class("Unauthenticated", ErrorCode.UNAUTHENTICATED)
QuotaExceeded = _error_class("QuotaExceeded", ErrorCode.QUOTA_EXCEEDED)
TimeLimitExceeded = _error_class("TimeLimitExceeded", ErrorCode.TIME_LIMIT_EXCEEDED)
#: A job asked for a device (``device="cuda"``) that no worker offers.
DeviceUnavailable = _error_class("DeviceUnavailable", ErrorCode.DEVICE_UNAVAILABLE)
ResultTooLarge = _error_class("ResultTooLarge", ErrorCode.RESULT_TOO_LARGE)
ServiceUnavailable = _error_class("ServiceUnavailable", ErrorCode.SERVICE_UNAVAILABLE)

ERROR_CLASSES: dict[ErrorCode, type[FpfError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest, NotFound, MethodNotAllowed, InvalidArray, ShapeMismatch, NonFinite, InvalidOptions, PayloadTooLarge,
        UnsupportedMediaType, InvalidModel, ValidationTimeout, IdempotencyConflict, ModelNotFound, ModelNotReady,
        JobNotFound, JobNotFinished, JobFailed, JobCancelled, Unauthenticated, QuotaExceeded,
        TimeLimitExceeded, DeviceUnavailable, ResultTooLarge, ServiceUnavailable,
    )
}
ERROR_CLASSES[ErrorCode.INTERNAL] = FpfError
