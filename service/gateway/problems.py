"""RFC 9457 problem documents for every failure, FastAPI's own included."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fpf_client.errors import ErrorCode, FpfError
from service.core.outages import OUTAGE_ERRORS, unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

#: How Starlette's own HTTP errors map onto fpf's codes.
_HTTP_CODES: dict[int, ErrorCode] = {
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
}


def problem_response(
    error: FpfError, instance: str | None = None, *, status: int | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The problem document of ``error`` as a response."""
    body = error.to_problem(instance)
    if status is not None:
        body["status"] = status
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def error_headers(error: FpfError) -> dict[str, str] | None:
    """HTTP headers an error calls for: ``WWW-Authenticate`` on 401, ``Retry-After`` when it says when to retry."""
    if error.code is ErrorCode.UNAUTHENTICATED:
        return {"WWW-Authenticate": 'Bearer realm="fpf"'}
    if "retry_after_s" in error.extra:
        return {"Retry-After": str(int(error.extra["retry_after_s"]))}
    return None


def problem_responses(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problem documents a route may answer with."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry = out.setdefault(code.http_status, {"description": "", "content": {PROBLEM_JSON: {}}})
        entry["description"] = ", ".join(filter(None, [entry["description"], f"`{code.value}`"]))
    return out


def _validation_code(errors: list[dict[str, Any]]) -> ErrorCode:
    """invalid_options or invalid_array when every error lies in one of those parts of the request."""
    places = {str(e.get("loc", ("",))[1]) if len(e.get("loc", ())) > 1 else "" for e in errors}
    if places == {"options"}:
        return ErrorCode.INVALID_OPTIONS
    if places and places <= {"initial_states", "inputs"}:
        return ErrorCode.INVALID_ARRAY
    return ErrorCode.INVALID_REQUEST


#: Validation errors spelt out in one problem's detail; an array of strings could have millions.
MAX_DESCRIBED_ERRORS = 10


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """One line per pydantic error, ``where: what``, for the first ``MAX_DESCRIBED_ERRORS``."""
    described = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:MAX_DESCRIBED_ERRORS]
    )
    more = len(errors) - MAX_DESCRIBED_ERRORS
    return described + (f"; and {more} more" if more > 0 else "")


def install_problem_handlers(app: FastAPI, *, unavailable_retry_after_s: int = 5) -> None:
    """Answer every error (ours, FastAPI's validation, Starlette's 404/405, crashes) as a problem document.

    An unreachable Redis or broker is ``503 service_unavailable`` with ``Retry-After:
    unavailable_retry_after_s``, wherever in the request it is met.
    """

    @app.exception_handler(FpfError)
    async def _fpf_error(request: Request, exc: FpfError) -> JSONResponse:
        return problem_response(exc, request.url.path, headers=error_headers(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        error = FpfError(describe_validation_errors(errors), code=_validation_code(errors))
        return problem_response(error, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, FpfError):  # FastAPI wraps errors raised while it reads the body
            return problem_response(exc.__cause__, request.url.path)
        code = _HTTP_CODES.get(
            exc.status_code, ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.INVALID_REQUEST
        )
        error = FpfError(str(exc.detail), code=code)
        return problem_response(error, request.url.path, status=exc.status_code, headers=exc.headers)

    async def _outage(request: Request, exc: Exception) -> JSONResponse:
        log.warning("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        error = unavailable(exc, unavailable_retry_after_s)
        return problem_response(error, request.url.path, headers=error_headers(error))

    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, _outage)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(FpfError("internal server error"), request.url.path)
