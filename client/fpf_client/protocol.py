"""The REST API as data: each operation is a :class:`Call` (what to send, how to read the answer).

:class:`~fpf_client.rest.HttpTransport` and :class:`~fpf_client.rest.AsyncHttpTransport` only differ
in how they send a call, so every request and every answer is built and decoded once, here
(:mod:`fpf_client.rpc.calls` does the same for gRPC).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import ValidationError

from .errors import (
    ERROR_CLASSES,
    ErrorCode,
    FpfError,
    InvalidModel,
    InvalidRequest,
    JobCancelled,
    JobFailed,
    ServiceUnavailable,
)
from .events import ServerSentEvent
from .fixed_points import FixedPoints
from .payloads import NPZ_MEDIA_TYPE, ModelFile, UploadHints, form_fields
from .records import JobRecord, Model
from .retry import mark_unreached

T = TypeVar("T")

#: HTTP statuses that only one error code uses, for answers that carry no problem document.
_CODE_OF_STATUS = {
    status: codes[0]
    for status in {code.http_status for code in ErrorCode}
    if len(codes := [code for code in ErrorCode if code.http_status == status]) == 1
}


@dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and the function that turns its (successful) response into a value."""

    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    params: dict[str, str] | None = None
    json: Any = None
    data: dict[str, str] | None = None
    files: dict[str, tuple[str, bytes, str]] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Whether sending it twice does what sending it once does (so it may be retried after any failure).
    idempotent: bool = True
    #: Codes that, answered to a retry, mean an earlier attempt did the work (a delete's 404).
    done_if: tuple[ErrorCode, ...] = ()
    #: Seconds the service may hold the answer back (a long poll): the read timeout allows that much more.
    wait_s: float = 0.0

    @property
    def what(self) -> str:
        """The call, for log lines."""
        return f"{self.method} {self.path}"

    def request_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``httpx.Client.request`` / ``httpx.AsyncClient.request``."""
        kwargs = {"params": self.params, "json": self.json, "data": self.data, "files": self.files}
        return {"headers": self.headers, **{k: v for k, v in kwargs.items() if v is not None}}

    def timeout(self, base: httpx.Timeout) -> httpx.Timeout:
        """The client's timeouts ``base``, with the read timeout extended by the call's wait."""
        if not self.wait_s or base.read is None:
            return base
        return httpx.Timeout(connect=base.connect, write=base.write, pool=base.pool, read=base.read + self.wait_s)

    def read(self, response: httpx.Response) -> T:
        """Decode ``response``, raising the problem's exception class for a non-2xx status."""
        raise_for_problem(response)
        return self.decode(response)


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the :class:`FpfError` subclass named by the problem document of a failed response."""
    if response.is_success:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict) or "code" not in problem:
        problem = _problem_without_code(response, problem)
    retry_after = _retry_after_s(response.headers.get("retry-after"))
    if retry_after is not None:
        problem.setdefault("retry_after_s", retry_after)
    raise FpfError.from_problem(problem)


def _retry_after_s(value: str | None) -> float | None:
    """Seconds of a ``Retry-After`` header given as a number (the HTTP date form is not used by fpf)."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _problem_without_code(response: httpx.Response, body: Any) -> dict[str, Any]:
    """A problem document for an answer from something other than the gateway (a proxy, a wrong URL)."""
    code = _CODE_OF_STATUS.get(response.status_code)
    if code is None:
        code = InvalidRequest.code if response.is_client_error else ErrorCode.INTERNAL
    detail = body.get("detail") if isinstance(body, dict) else None
    text = detail if isinstance(detail, str) else response.text[:200]
    return {
        "code": code.value,
        "detail": f"HTTP {response.status_code} from {response.request.method} {response.request.url}: {text}",
    }


def unreachable(url: str, exc: httpx.TransportError) -> FpfError:
    """The error for a request that never got an answer."""
    reason = str(exc) or type(exc).__name__
    return mark_unreached(ServiceUnavailable(f"cannot reach the fpf service at {url}: {reason}"))


def _items(response: httpx.Response) -> list[Any]:
    """A list endpoint's items, whether the body is a list or ``{"items": [...]}``."""
    body = response.json()
    items: list[Any] = body["items"] if isinstance(body, dict) else body
    return items


def _nothing(response: httpx.Response) -> None:
    return None


# --- models ----------------------------------------------------------------------------------
def upload_model(model: ModelFile, hints: UploadHints) -> Call[Model]:
    # Idempotent: models are stored by the sha256 of their bytes, so the same upload twice is one model.
    return Call(
        "POST",
        "/v1/models",
        lambda r: Model.model_validate_json(r.content),
        data=form_fields(**hints.given()),
        files={"file": (model.filename, model.content, "application/octet-stream")},
    )


def get_model(model_id: str) -> Call[Model]:
    return Call("GET", f"/v1/models/{model_id}", lambda r: Model.model_validate_json(r.content))


def list_models() -> Call[list[Model]]:
    return Call("GET", "/v1/models", lambda r: [Model.model_validate(item) for item in _items(r)])


def delete_model(model_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/models/{model_id}", _nothing, done_if=(ErrorCode.MODEL_NOT_FOUND,))


# --- jobs ------------------------------------------------------------------------------------
def submit_job(
    model_id: str, arrays_npz: bytes, options: dict[str, Any], idempotency_key: str | None
) -> Call[JobRecord]:
    return Call(
        "POST",
        "/v1/jobs",
        lambda r: JobRecord.model_validate_json(r.content),
        data=form_fields(model_id=model_id, options=options),
        files={"arrays": ("arrays.npz", arrays_npz, NPZ_MEDIA_TYPE)},
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        idempotent=bool(idempotency_key),
    )


def get_job(job_id: str) -> Call[JobRecord]:
    return Call("GET", f"/v1/jobs/{job_id}", lambda r: JobRecord.model_validate_json(r.content))


def list_jobs(status: str | None = None) -> Call[list[JobRecord]]:
    return Call(
        "GET",
        "/v1/jobs",
        lambda r: [JobRecord.model_validate(item) for item in _items(r)],
        params={"status": status} if status else None,
    )


def cancel_job(job_id: str) -> Call[None]:
    return Call("POST", f"/v1/jobs/{job_id}/cancel", _nothing)


def delete_job(job_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/jobs/{job_id}", _nothing, done_if=(ErrorCode.JOB_NOT_FOUND,))


def job_result(job_id: str, wait_s: float = 0.0) -> Call[FixedPoints]:
    """The result ``.npz``, the service waiting up to ``wait_s`` seconds for the job to end first."""
    params = {"format": "npz"} if wait_s <= 0 else {"format": "npz", "wait": f"{wait_s:.3f}"}
    return Call(
        "GET",
        f"/v1/jobs/{job_id}/result",
        lambda r: FixedPoints.load(r.content),
        params=params,
        headers={"Accept": NPZ_MEDIA_TYPE},
        wait_s=max(wait_s, 0.0),
    )


def job_events_path(job_id: str) -> str:
    """The server-sent-events stream of a job's changes."""
    return f"/v1/jobs/{job_id}/events"


def is_event_stream(response: httpx.Response) -> bool:
    """Whether the gateway answered the ``/events`` request with a stream (else the client polls)."""
    return response.status_code == 200 and response.headers.get("content-type", "").startswith("text/event-stream")


def is_stream_unavailable(response: httpx.Response) -> bool:
    """Whether the ``/events`` request was answered "not now" (a 503 or 502/504 from a proxy): the
    stream may be opened again later, unlike an answer that is no stream at all."""
    return response.status_code in (502, 503, 504)


def event_record(event: ServerSentEvent) -> JobRecord | None:
    """The job carried by an event of the ``/events`` stream, if its data is one."""
    if not event.data:
        return None
    try:
        return JobRecord.model_validate_json(event.data)
    except ValidationError:
        return None


# --- waiting ---------------------------------------------------------------------------------
def deadline_after(timeout: float | None) -> float:
    """The ``time.monotonic()`` value at which waiting gives up (infinity for no timeout)."""
    return math.inf if timeout is None else time.monotonic() + timeout


def seconds_left(deadline: float) -> float:
    return deadline - time.monotonic()


def poll_delays(first: float = 0.05, factor: float = 1.5, longest: float = 1.0) -> Iterator[float]:
    """Growing pauses between polls: quick answers for quick jobs, little load for long ones."""
    delay = first
    while True:
        yield delay
        delay = min(delay * factor, longest)


def stream_timeout(base: httpx.Timeout, deadline: float, longest_silence: float = 30.0) -> httpx.Timeout:
    """Timeouts for the event stream: a read gives up at the deadline, or after a silence to reconnect."""
    return httpx.Timeout(
        connect=base.connect,
        write=base.write,
        pool=base.pool,
        read=max(0.0, min(seconds_left(deadline), longest_silence)),
    )


def check_model_usable(model: Model) -> Model:
    """Return ``model`` unless the service found it invalid, in which case raise :class:`InvalidModel`
    (its subclass :class:`~fpf_client.errors.ValidationTimeout` for a validation that timed out)."""
    if model.status == "invalid":
        detail = (model.error or {}).get("detail") or "the service could not load it"
        code = _code_of(model.error)
        cls = ERROR_CLASSES.get(code, InvalidModel) if code is not None else InvalidModel
        raise (cls if issubclass(cls, InvalidModel) else InvalidModel)(
            f"model {model.id[:12]} ({model.filename}) is invalid: {detail}", error=model.error
        )
    return model


def _code_of(problem: dict[str, Any] | None) -> ErrorCode | None:
    try:
        return ErrorCode((problem or {}).get("code"))
    except ValueError:
        return None


def check_succeeded(record: JobRecord) -> None:
    """Raise :class:`JobFailed` or :class:`JobCancelled` unless the (final) job succeeded."""
    if record.status == "failed":
        detail = (record.error or {}).get("detail") or "no reason given"
        raise JobFailed(f"job {record.id} failed: {detail}", error=record.error)
    if record.status == "cancelled":
        raise JobCancelled(f"job {record.id} was cancelled")


def timed_out(what: str, timeout: float | None) -> TimeoutError:
    return TimeoutError(f"{what} after {timeout} s")
