"""``/v1/jobs``: submit a fixed-point search, follow it, fetch its result, cancel or delete it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from fpf_client.errors import ErrorCode
from fpf_client.fixed_points import FixedPoints
from fpf_client.records import MAX_RESULT_WAIT_S
from service.core.records import JobStatus
from service.gateway.deps import (
    ArtifactsDep,
    DispatcherDep,
    JobDep,
    PrincipalDep,
    QuotasDep,
    SettingsDep,
    StoreDep,
    get_principal,
    require_job,
)
from service.gateway.events import ended_job, job_events
from service.gateway.operations import enqueue_job, remove_job, result_path
from service.gateway.problems import problem_responses
from service.gateway.schemas import JobOut, JobRequest
from service.gateway.scoping import visible_jobs
from service.gateway.submission import read_submission

router = APIRouter(
    prefix="/v1/jobs",
    tags=["jobs"],
    dependencies=[Depends(get_principal)],
    responses=problem_responses(ErrorCode.UNAUTHENTICATED),
)

NPZ = "application/x-npz"
_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": JobRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["model_id", "arrays"],
                    "properties": {
                        "model_id": {"type": "string"},
                        "options": {"type": "string", "description": "FinderOptions as JSON text"},
                        "arrays": {
                            "type": "string",
                            "format": "binary",
                            "description": ".npz with initial_states (n, n_states) and optionally inputs",
                        },
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    openapi_extra=_SUBMIT_BODY,
    responses={
        200: {"model": JobOut, "description": "Replay of an Idempotency-Key"},
        **problem_responses(
            ErrorCode.INVALID_REQUEST,
            ErrorCode.INVALID_ARRAY,
            ErrorCode.SHAPE_MISMATCH,
            ErrorCode.NON_FINITE,
            ErrorCode.INVALID_OPTIONS,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.INVALID_MODEL,
            ErrorCode.MODEL_NOT_FOUND,
            ErrorCode.MODEL_NOT_READY,
            ErrorCode.IDEMPOTENCY_CONFLICT,
            ErrorCode.QUOTA_EXCEEDED,
            ErrorCode.SERVICE_UNAVAILABLE,
        ),
    },
)
async def submit_job(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    artifacts: ArtifactsDep,
    dispatcher: DispatcherDep,
    principal: PrincipalDep,
    quotas: QuotasDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Check a job completely, store its arrays and queue it (202 + ``Location``)."""
    submission = await read_submission(
        request,
        settings.max_array_elements,
        settings.max_body_bytes,
        admit=lambda n_bytes: quotas.check_storage(principal.tenant, n_bytes),
        parse_json=request.app.state.body_parser.parse,
    )
    job, created = await run_in_threadpool(
        enqueue_job,
        submission,
        idempotency_key,
        settings,
        store,
        artifacts,
        dispatcher,
        principal=principal,
        quotas=quotas,
    )
    return JSONResponse(
        JobOut.of(job).model_dump(mode="json"),
        status_code=202 if created else 200,
        headers={"Location": f"/v1/jobs/{job.id}"},
    )


@router.get("", response_model=list[JobOut])
def list_jobs(
    store: StoreDep,
    principal: PrincipalDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """The caller's jobs (everyone's for an admin) newest first, optionally only those with ``status``."""
    return [JobOut.of(j) for j in visible_jobs(store, principal, status, limit)]


@router.get("/{job_id}", response_model=JobOut, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
async def get_job(job: JobDep) -> JobOut:
    return JobOut.of(job)


@router.post("/{job_id}/cancel", response_model=JobOut, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
def cancel_job(job: JobDep, store: StoreDep) -> JobOut:
    """Cancel a queued job at once; ask a running one to stop (it ends ``cancelled`` within seconds)."""
    cancelled = store.cancel(job.id)
    return JobOut.of(cancelled if cancelled is not None else job)


@router.get(
    "/{job_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}, **problem_responses(ErrorCode.JOB_NOT_FOUND)},
)
async def stream_job_events(
    job_id: str, request: Request, store: StoreDep, principal: PrincipalDep
) -> StreamingResponse:
    """Server-sent events: ``progress`` with the job whenever it changes, then ``end`` at a final status."""
    await run_in_threadpool(require_job, job_id, store, principal)
    return StreamingResponse(
        job_events(request.app.state.async_redis, store, job_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{job_id}/result",
    responses={
        200: {
            "content": {"application/json": {}, NPZ: {}},
            "description": "FixedPoints as JSON (to_json_dict) or .npz (FixedPoints.load)",
        },
        **problem_responses(
            ErrorCode.INVALID_REQUEST,
            ErrorCode.JOB_NOT_FOUND,
            ErrorCode.JOB_NOT_FINISHED,
            ErrorCode.JOB_FAILED,
            ErrorCode.JOB_CANCELLED,
        ),
    },
)
async def get_result(
    job: JobDep,
    request: Request,
    store: StoreDep,
    artifacts: ArtifactsDep,
    format: Literal["json", "npz"] | None = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_RESULT_WAIT_S,
            description="Seconds to wait for a queued or running job to end before answering (a long poll); "
            "one request then waits for the job and fetches its result.",
        ),
    ] = 0.0,
) -> Response:
    """The fixed points: ``.npz`` for ``?format=npz`` or ``Accept: application/x-npz``, JSON otherwise."""
    job = await ended_job(request.app.state.async_redis, store, job, wait)
    path = result_path(job, artifacts)
    if format == "npz" or (format is None and NPZ in request.headers.get("accept", "")):
        return FileResponse(path, media_type=NPZ, filename=f"{job.id}.npz")
    return JSONResponse(await run_in_threadpool(lambda: FixedPoints.load(path).to_json_dict()))


@router.delete("/{job_id}", status_code=204, responses=problem_responses(ErrorCode.JOB_NOT_FOUND))
def delete_job(job: JobDep, store: StoreDep, artifacts: ArtifactsDep) -> Response:
    """Remove a job and its files; a running job is asked to stop first."""
    remove_job(job, store, artifacts)
    return Response(status_code=204)
