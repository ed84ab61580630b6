"""``/v1/jobs``: submit a fixed-point search, follow it, fetch its result, cancel or delete it."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fpf_client.errors import (ErrorCode, IdempotencyConflict, InvalidModel, JobCancelled, JobFailed,
                               JobNotFinished, ModelNotFound, ModelNotReady, ServiceUnavailable)
from fpf_client.fixed_points import FixedPoints

from ..arrays import check_job_arrays, fingerprint
from ..artifacts import ArtifactStore
from ..deps import ArtifactsDep, DispatcherDep, JobDep, SettingsDep, StoreDep, require_job
from ..dispatch import Dispatcher
from ..events import job_events
from ..problems import problem_responses
from ..records import Job, JobStatus, ModelStatus
from ..schemas import JobOut, JobRequest
from ..settings import Settings
from ..store import JobStore
from ..submission import Submission, read_submission

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

NPZ = "application/x-npz"
_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobRequest.model_json_schema()},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["model_id", "arrays"],
                "properties": {
                    "model_id": {"type": "string"},
                    "options": {"type": "string", "description": "FinderOptions as JSON text"},
                    "arrays": {"type": "string", "format": "binary",
                               "description": ".npz with initial_states (n, n_states) and optionally inputs"},
                },
            }},
        },
    }
}


@router.post("", status_code=202, response_model=JobOut, openapi_extra=_SUBMIT_BODY,
             responses={200: {"model": JobOut, "description": "Replay of an Idempotency-Key"},
                        **problem_responses(ErrorCode.INVALID_REQUEST, ErrorCode.INVALID_ARRAY,
                                            ErrorCode.SHAPE_MISMATCH, ErrorCode.NON_FINITE, ErrorCode.INVALID_OPTIONS,
                                            ErrorCode.PAYLOAD_TOO_LARGE, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                                            ErrorCode.INVALID_MODEL, ErrorCode.MODEL_NOT_FOUND,
                                            ErrorCode.MODEL_NOT_READY, ErrorCode.IDEMPOTENCY_CONFLICT,
                                            ErrorCode.SERVICE_UNAVAILABLE)})
async def submit_job(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    artifacts: ArtifactsDep,
    dispatcher: DispatcherDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Check a job completely, store its arrays and queue it (202 + ``Location``)."""
    submission = await read_submission(request, settings.max_array_elements)
    job, created = await run_in_threadpool(_enqueue, submission, idempotency_key, settings, store, artifacts,
                                           dispatcher)
    return JSONResponse(JobOut.of(job).model_dump(mode="json"), status_code=202 if created else 200,
                        headers={"Location": f"/v1/jobs/{job.id}"})


def _enqueue(submission: Submission, idempotency_key: str | None, settings: Settings, store: JobStore,
             artifacts: ArtifactStore, dispatcher: Dispatcher) -> tuple[Job, bool]:
    """Check the arrays against the model, store the job and queue it; (job, created)."""
    model = store.get_model(submission.model_id)
    if model is None:
        raise ModelNotFound(f"no model {submission.model_id}", field="model_id")
    if model.status is ModelStatus.VALIDATING:
        raise ModelNotReady(f"model {model.id} is still being validated; retry when its status is ready")
    if model.status is ModelStatus.INVALID:
        reason = (model.error or {}).get("detail", "it failed validation")
        raise InvalidModel(f"model {model.id} is invalid: {reason}", field="model_id")
    initial_states, inputs = check_job_arrays(
        submission.initial_states, submission.inputs, n_states=model.n_states, n_inputs=model.n_inputs,
        max_initial_states=settings.max_initial_states)
    options = submission.options.model_dump(mode="json")
    digest = fingerprint(model.id, json.dumps(options, sort_keys=True), initial_states, inputs)

    job = Job(id=uuid.uuid4().hex, model_id=model.id, status=JobStatus.QUEUED,
              n_initial_states=int(initial_states.shape[0]), options=options, created_at=time.time())
    with artifacts.atomic_write(artifacts.arrays_path(job.id)) as out:
        np.savez(out, initial_states=initial_states, inputs=inputs)
    store.create_job(job)
    if idempotency_key is not None:
        bound_id, bound_digest = store.remember_idempotency(idempotency_key, job.id, digest)
        if bound_id != job.id:  # a replay: drop the copy, answer with the original
            store.delete_job(job.id)
            artifacts.delete_job(job.id)
            if bound_digest != digest:
                raise _idempotency_conflict(idempotency_key)
            original = store.get_job(bound_id)
            if original is None:
                raise _idempotency_conflict(idempotency_key, "its job has been deleted")
            return original, False
    try:
        dispatcher.run_job(job.id, job.dispatch)
    except Exception as exc:
        log.exception("job %s: could not be queued", job.id)
        error = ServiceUnavailable(f"the job queue is unavailable: {exc}")
        store.abandon(job.id, error.to_problem())
        raise error from exc
    return job, True


def _idempotency_conflict(key: str, why: str = "with another request body") -> IdempotencyConflict:
    return IdempotencyConflict(f"Idempotency-Key {key!r} was used before {why}")


@router.get("", response_model=list[JobOut])
def list_jobs(store: StoreDep, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[JobOut]:
    """Jobs newest first, optionally only those with ``status``."""
    return [JobOut.of(j) for j in store.list_jobs(status, limit)]


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
def get_job(job: JobDep) -> JobOut:
    return JobOut.of(job)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
def cancel_job(job: JobDep, store: StoreDep) -> JobOut:
    """Cancel a queued job at once; ask a running one to stop (it ends ``cancelled`` within seconds)."""
    cancelled = store.cancel(job.id)
    return JobOut.of(cancelled if cancelled is not None else job)


@router.get("/{job_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}},
                       **problem_responses(ErrorCode.JOB_NOT_FOUND)})
async def stream_job_events(job_id: str, request: Request, store: StoreDep) -> StreamingResponse:
    """Server-sent events: ``progress`` with the job whenever it changes, then ``end`` at a final status."""
    await run_in_threadpool(require_job, job_id, store)
    return StreamingResponse(job_events(request.app.state.async_redis, store, job_id),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/{job_id}/result",
            responses={200: {"content": {"application/json": {}, NPZ: {}},
                             "description": "FixedPoints as JSON (to_json_dict) or .npz (FixedPoints.load)"},
                       **problem_responses(ErrorCode.JOB_NOT_FOUND, ErrorCode.JOB_NOT_FINISHED,
                                           ErrorCode.JOB_FAILED, ErrorCode.JOB_CANCELLED)})
def get_result(job: JobDep, request: Request, artifacts: ArtifactsDep,
               format: Literal["json", "npz"] | None = None) -> Response:
    """The fixed points: ``.npz`` for ``?format=npz`` or ``Accept: application/x-npz``, JSON otherwise."""
    if job.status is JobStatus.FAILED:
        raise JobFailed(f"job {job.id} failed: {(job.error or {}).get('detail', 'unknown error')}", error=job.error)
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} was cancelled")
    if job.status is not JobStatus.SUCCEEDED:
        raise JobNotFinished(f"job {job.id} is {job.status.value}")
    path = artifacts.result_path(job.id)
    if format == "npz" or (format is None and NPZ in request.headers.get("accept", "")):
        return FileResponse(path, media_type=NPZ, filename=f"{job.id}.npz")
    return JSONResponse(FixedPoints.load(path).to_json_dict())


@router.delete("/{job_id}", status_code=204, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
def delete_job(job: JobDep, store: StoreDep, artifacts: ArtifactsDep) -> Response:
    """Remove a job and its files; a running job is asked to stop first."""
    store.cancel(job.id)
    store.delete_job(job.id)
    artifacts.delete_job(job.id)
    return Response(status_code=204)
