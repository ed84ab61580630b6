"""Reading a job submission, JSON or multipart with an ``.npz``, into checked parts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from fpf_client.errors import InvalidArray, InvalidOptions, InvalidRequest, UnsupportedMediaType
from fpf_client.options import FinderOptions
from service.gateway.arrays import ARRAY_NAMES, from_json, read_npz
from service.gateway.problems import describe_validation_errors
from service.gateway.schemas import JobRequest


@dataclass
class Submission:
    """What a client asked for, before the arrays are checked against the model."""

    model_id: str
    options: FinderOptions
    initial_states: np.ndarray
    inputs: np.ndarray | None
    cond_ids: np.ndarray | None = None


async def read_submission(
    request: Request,
    max_elements: int,
    max_bytes: int,
    admit: Callable[[int], None] | None = None,
    parse_json: Callable[[Request], Awaitable[Submission]] | None = None,
) -> Submission:
    """Parse the body by its content type; malformed parts raise the matching fpf error.

    Parsing and array conversion run off the event loop, so that a large body does not hold it (and
    ``/healthz``) for the seconds it takes: a JSON request by ``parse_json`` (the gateway's
    :class:`~service.gateway.body_parsing.BodyParser`; default: its body in the threadpool), an
    ``.npz`` in the threadpool (numpy reads it without the GIL). ``admit`` is called with the bytes
    the arrays will take in memory before an ``.npz`` is decompressed (quotas); ``max_bytes`` bounds them.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        if parse_json is not None:
            return await parse_json(request)
        return await run_in_threadpool(parse_json_body, await request.body())
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        try:
            return await run_in_threadpool(_from_form, form, max_elements, max_bytes, admit)
        finally:
            await form.close()
    raise UnsupportedMediaType(f"send application/json or multipart/form-data, not {content_type or 'nothing'!r}")


def parse_options(raw: str | dict[str, Any]) -> FinderOptions:
    """FinderOptions from a dict or its JSON text, with strict types (``"1e-10"`` is not a number);
    every problem, nesting too deep for the JSON parser included, is ``invalid_options``."""
    try:
        if isinstance(raw, str):
            return FinderOptions.model_validate_json(raw if raw.strip() else "{}", strict=True)
        return FinderOptions.model_validate(raw, strict=True)
    except ValidationError as exc:
        errors = [{**e, "loc": ("options", *e["loc"])} for e in exc.errors()]
        raise InvalidOptions(describe_validation_errors(errors), field="options") from exc


def parse_json_body(body: bytes) -> Submission:
    """A JSON job body, parsed and typed by ``JobRequest`` in strict mode: arrays hold JSON numbers only."""
    try:
        request = JobRequest.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise _body_error(exc.errors()) from exc
    return Submission(
        model_id=request.model_id,
        options=parse_options(request.options),
        initial_states=from_json("initial_states", request.initial_states),
        inputs=None if request.inputs is None else from_json("inputs", request.inputs),
        cond_ids=None if request.cond_ids is None else _labels(request.cond_ids),
    )


def _labels(cond_ids: list[int]) -> np.ndarray:
    """JSON ``cond_ids`` as int64; a label that does not fit is ``invalid_array``."""
    try:
        return np.asarray(cond_ids, dtype=np.int64)
    except OverflowError:
        raise InvalidArray("cond_ids must fit in 64-bit integers", field="cond_ids") from None


def _body_error(errors: list[Any]) -> InvalidRequest:
    """The error of a JSON body that ``JobRequest`` refused, by where the first problem lies."""
    loc = errors[0]["loc"]
    place = str(loc[0]) if loc else ""
    if errors[0]["type"] == "json_invalid":
        return InvalidRequest(f"the body is not valid JSON: {errors[0]['msg']}")
    if errors[0]["type"] == "extra_forbidden":
        return InvalidRequest(f"unknown field {place!r}; expected {sorted(JobRequest.model_fields)}", field=place)
    detail = describe_validation_errors(errors)
    if place in ARRAY_NAMES:
        return InvalidArray(f"{detail} (arrays hold JSON numbers only)", field=place)
    if place == "options":
        return InvalidOptions(detail, field="options")
    return InvalidRequest(detail, field=place) if place else InvalidRequest(detail)


def _from_form(form: Any, max_elements: int, max_bytes: int, admit: Callable[[int], None] | None) -> Submission:
    unknown = sorted(set(form.keys()) - {"model_id", "options", "arrays"})
    if unknown:
        raise InvalidRequest(f"unknown form fields {unknown}; expected model_id, options, arrays")
    model_id = form.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("model_id is required", field="model_id")
    arrays_file = form.get("arrays")
    if not isinstance(arrays_file, UploadFile):
        raise InvalidArray(
            "arrays (an .npz file with initial_states and optionally inputs) is required", field="arrays"
        )
    arrays = read_npz(arrays_file.file, max_elements=max_elements, max_bytes=max_bytes, admit=admit)
    if "initial_states" not in arrays:
        raise InvalidArray("arrays has no initial_states", field="initial_states")
    options = form.get("options")
    return Submission(
        model_id=model_id,
        options=parse_options(options if isinstance(options, str) else ""),
        initial_states=arrays["initial_states"],
        inputs=arrays.get("inputs"),
        cond_ids=arrays.get("cond_ids"),
    )
