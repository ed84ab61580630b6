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
    def title(self) -> str:  # type: ignore[override]  # the problem title, not str.title
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
    def from_problem(cls, problem: dict[str, Any]) -> FpfError:
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


class InvalidRequest(FpfError):
    """The request itself is malformed (base of the input errors)."""

    code = ErrorCode.INVALID_REQUEST


class InvalidArray(InvalidRequest):
    """Raised for error code ``invalid_array``."""

    code = ErrorCode.INVALID_ARRAY


class ShapeMismatch(InvalidRequest):
    """Raised for error code ``shape_mismatch``."""

    code = ErrorCode.SHAPE_MISMATCH


class NonFinite(InvalidRequest):
    """Raised for error code ``non_finite``."""

    code = ErrorCode.NON_FINITE


class InvalidOptions(InvalidRequest):
    """Raised for error code ``invalid_options``."""

    code = ErrorCode.INVALID_OPTIONS


class PayloadTooLarge(InvalidRequest):
    """Raised for error code ``payload_too_large``."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnsupportedMediaType(InvalidRequest):
    """Raised for error code ``unsupported_media_type``."""

    code = ErrorCode.UNSUPPORTED_MEDIA_TYPE


class InvalidModel(InvalidRequest):
    """Raised for error code ``invalid_model``."""

    code = ErrorCode.INVALID_MODEL


class ValidationTimeout(InvalidModel):
    """A model whose loading and dry run did not end within the validation time limit: it is invalid."""

    code = ErrorCode.VALIDATION_TIMEOUT


class IdempotencyConflict(InvalidRequest):
    """Raised for error code ``idempotency_conflict``."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class NotFound(FpfError):
    """Raised for error code ``not_found``."""

    code = ErrorCode.NOT_FOUND


class MethodNotAllowed(FpfError):
    """Raised for error code ``method_not_allowed``."""

    code = ErrorCode.METHOD_NOT_ALLOWED


class ModelNotFound(FpfError):
    """Raised for error code ``model_not_found``."""

    code = ErrorCode.MODEL_NOT_FOUND


class ModelNotReady(FpfError):
    """Raised for error code ``model_not_ready``."""

    code = ErrorCode.MODEL_NOT_READY


class JobNotFound(FpfError):
    """Raised for error code ``job_not_found``."""

    code = ErrorCode.JOB_NOT_FOUND


class JobNotFinished(FpfError):
    """Raised for error code ``job_not_finished``."""

    code = ErrorCode.JOB_NOT_FINISHED


class JobFailed(FpfError):
    """Raised for error code ``job_failed``."""

    code = ErrorCode.JOB_FAILED


class JobCancelled(FpfError):
    """Raised for error code ``job_cancelled``."""

    code = ErrorCode.JOB_CANCELLED


class Unauthenticated(FpfError):
    """Raised for error code ``unauthenticated``."""

    code = ErrorCode.UNAUTHENTICATED


class QuotaExceeded(FpfError):
    """Raised for error code ``quota_exceeded``."""

    code = ErrorCode.QUOTA_EXCEEDED


class TimeLimitExceeded(FpfError):
    """Raised for error code ``time_limit_exceeded``."""

    code = ErrorCode.TIME_LIMIT_EXCEEDED


class DeviceUnavailable(FpfError):
    """A job asked for a device (``device="cuda"``) that no worker offers."""

    code = ErrorCode.DEVICE_UNAVAILABLE


class ResultTooLarge(FpfError):
    """Raised for error code ``result_too_large``."""

    code = ErrorCode.RESULT_TOO_LARGE


class ServiceUnavailable(FpfError):
    """Raised for error code ``service_unavailable``."""

    code = ErrorCode.SERVICE_UNAVAILABLE


ERROR_CLASSES: dict[ErrorCode, type[FpfError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        NotFound,
        MethodNotAllowed,
        InvalidArray,
        ShapeMismatch,
        NonFinite,
        InvalidOptions,
        PayloadTooLarge,
        UnsupportedMediaType,
        InvalidModel,
        ValidationTimeout,
        IdempotencyConflict,
        ModelNotFound,
        ModelNotReady,
        JobNotFound,
        JobNotFinished,
        JobFailed,
        JobCancelled,
        Unauthenticated,
        QuotaExceeded,
        TimeLimitExceeded,
        DeviceUnavailable,
        ResultTooLarge,
        ServiceUnavailable,
    )
}
ERROR_CLASSES[ErrorCode.INTERNAL] = FpfError
