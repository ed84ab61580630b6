"""The web page's routes: the page at ``/``, its files, and three read-only helpers it calls.

The helpers live under ``/web`` rather than ``/v1``: they serve this page (who am I, the cluster at a
glance, a result prepared for plotting), are not part of the API contract that REST and gRPC share,
and may change with the page. They authenticate and scope records exactly as ``/v1`` does.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from fpf_client.errors import NotFound, Unauthenticated
from service.core.records import JobStatus
from service.gateway.deps import ArtifactsDep, DispatcherDep, JobDep, PrincipalDep, SettingsDep, StoreDep, get_principal
from service.gateway.operations import result_path
from service.gateway.web.page import PAGE_HEADERS, STATIC_DIR, Plotly, render_index
from service.gateway.web.view import result_view

router = APIRouter(include_in_schema=False)


class _PageFiles(StaticFiles):
    """The page's own files, with the page's security headers."""

    def file_response(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        response = super().file_response(*args, **kwargs)
        response.headers.update(PAGE_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the page at ``/``, its files under ``/web/static`` and plotly.js under ``/web/vendor``."""
    plotly = Plotly.installed()
    index = render_index(plotly)

    @app.get("/", include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(index, headers=PAGE_HEADERS)

    @app.get(plotly.url, include_in_schema=False)
    def plotly_js() -> FileResponse:
        # The path names the version, so the file under it never changes.
        return FileResponse(
            plotly.path,
            media_type="text/javascript",
            headers={**PAGE_HEADERS, "Cache-Control": "public, max-age=31536000, immutable"},
        )

    app.mount("/web/static", _PageFiles(directory=STATIC_DIR), name="web-static")
    app.include_router(router)


@router.get("/web/session")
def session(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Who the caller is, or why nobody: the page shows the sign-in form, or the cluster panel to admins.

    It answers 200 either way (``signed_in`` false with the reason), so that a page opened without a
    key does not start with a failed request.
    """
    try:
        principal = get_principal(request)
    except Unauthenticated as exc:
        return {"signed_in": False, "keys_required": True, "detail": exc.detail}
    return {
        "signed_in": True,
        "tenant": principal.tenant,
        "role": principal.role.value,
        "is_admin": principal.is_admin,
        "keys_required": principal.key_id is not None,
        "max_body_bytes": settings.max_body_bytes,
        "max_initial_states": settings.max_initial_states,
    }


@router.get("/web/cluster")
def cluster(
    principal: PrincipalDep, store: StoreDep, dispatcher: DispatcherDep, settings: SettingsDep
) -> dict[str, Any]:
    """Admins only: queue depth and jobs by state (as ``/metrics``), the workers answering a ping (as
    ``/readyz``) and the jobs running on each. Anyone else gets 404, as for a page that is not there."""
    if not principal.is_admin:
        raise NotFound("no such page")
    running = store.list_jobs(JobStatus.RUNNING, 1000)
    workers = sorted(name for reply in dispatcher.ping_workers(settings.worker_ping_timeout_s) for name in reply)
    return {
        "queue_depth": store.queue_depth(settings.queue),
        "jobs_by_state": {status.value: count for status, count in store.count_jobs().items()},
        "workers": workers,
        "running": [
            {
                "id": job.id,
                "tenant": job.tenant,
                "worker": job.worker,
                "model_id": job.model_id,
                "started_at": job.started_at,
                "progress": job.progress,
            }
            for job in running
        ],
    }


@router.get("/web/jobs/{job_id}/view")
def job_view(job: JobDep, artifacts: ArtifactsDep) -> Response:
    """The job's result prepared for the page's plots (:func:`service.gateway.web.view.result_view`); the same
    ``job_not_finished`` / ``job_failed`` / ``job_cancelled`` answers as ``/v1/jobs/{id}/result``."""
    path = result_path(job, artifacts)
    return Response(_view_json(str(path), path.stat().st_mtime_ns), media_type="application/json")


@lru_cache(maxsize=32)
def _view_json(path: str, mtime_ns: int) -> bytes:
    """A finished result never changes: its view is computed once per gateway process (a few MB at most)."""
    return json.dumps(result_view(Path(path)), allow_nan=False, separators=(",", ":")).encode()
