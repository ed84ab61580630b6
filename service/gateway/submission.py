"""Reading a job submission, JSON or multipart with an ``.npz``, into checked parts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fpf_client.errors import InvalidArray, InvalidOptions, InvalidRequest, UnsupportedMediaType
from fpf_client.options import FinderOptions
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from service.gateway.arrays import from_json, read_npz
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


async def read_submission(request: Request, max_elements: int) -> Submission:
    """Parse the body by its content type; malformed parts raise the matching fpf error."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        return _from_json(await request.body())
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=8)
        try:
            return await run_in_threadpool(_from_form, form, max_elements)
        finally:
            await form.close()
    raise UnsupportedMediaType(f"send application/json or multipart/form-data, not {content_type or 'nothing'!r}")


def parse_options(raw: Any) -> FinderOptions:
    """FinderOptions from a dict (or its JSON text); every problem is ``invalid_options``."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidOptions(f"options is not valid JSON: {exc}", field="options") from exc
    if not isinstance(raw, dict):
        raise InvalidOptions("options must be a JSON object", field="options")
    try:
        return FinderOptions.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("options", *e["loc"])} for e in exc.errors()]
        raise InvalidOptions(describe_validation_errors(errors), field="options") from exc


def _from_json(body: bytes) -> Submission:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(payload) - set(JobRequest.model_fields))
    if unknown:
        raise InvalidRequest(f"unknown fields {unknown}; expected {sorted(JobRequest.model_fields)}")
    model_id = payload.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("model_id is required", field="model_id")
    if payload.get("initial_states") is None:
        raise InvalidArray("initial_states is required", field="initial_states")
    inputs, cond_ids = payload.get("inputs"), payload.get("cond_ids")
    return Submission(
        model_id=model_id,
        options=parse_options(payload.get("options") or {}),
        initial_states=from_json("initial_states", payload["initial_states"]),
        inputs=None if inputs is None else from_json("inputs", inputs),
        cond_ids=None if cond_ids is None else from_json("cond_ids", cond_ids),
    )


def _from_form(form: Any, max_elements: int) -> Submission:
    unknown = sorted(set(form.keys()) - {"model_id", "options", "arrays"})
    if unknown:
        raise InvalidRequest(f"unknown form fields {unknown}; expected model_id, options, arrays")
    model_id = form.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise InvalidRequest("model_id is required", field="model_id")
    arrays_file = form.get("arrays")
    if not isinstance(arrays_file, UploadFile):
        raise InvalidArray("arrays (an .npz file with initial_states and optionally inputs) is required",
                           field="arrays")
    arrays = read_npz(arrays_file.file, max_elements=max_elements)
    if "initial_states" not in arrays:
        raise InvalidArray("arrays has no initial_states", field="initial_states")
    options = form.get("options")
    return Submission(
        model_id=model_id,
        options=parse_options(options if isinstance(options, str) else "{}"),
        initial_states=arrays["initial_states"],
        inputs=arrays.get("inputs"),
        cond_ids=arrays.get("cond_ids"),
    )
