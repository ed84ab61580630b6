"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fpf_client.errors import ErrorCode, ServiceUnavailable
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.gateway.deps import DispatcherDep, SettingsDep, StoreDep, get_principal
from service.gateway.problems import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(ErrorCode.SERVICE_UNAVAILABLE))
def readyz(store: StoreDep, dispatcher: DispatcherDep, settings: SettingsDep) -> dict[str, object]:
    """Redis answers and at least one worker replies to a ping; 503 ``service_unavailable`` otherwise."""
    try:
        store.ping()
    except Exception as exc:
        raise ServiceUnavailable(f"Redis does not answer: {exc}") from exc
    replies = dispatcher.ping_workers(settings.worker_ping_timeout_s)
    if not replies:
        raise ServiceUnavailable(f"no worker answered a ping within {settings.worker_ping_timeout_s} s")
    return {"status": "ready", "workers": sorted(name for reply in replies for name in reply)}


@router.get("/metrics", response_class=Response, dependencies=[Depends(get_principal)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **problem_responses(ErrorCode.UNAUTHENTICATED)})
def metrics(request: Request) -> Response:
    """Prometheus text: jobs by state, queue depth, job durations (any API key, once keys exist)."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
