"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fpf_client.errors import ErrorCode, ServiceUnavailable
from service.core.outages import OUTAGE_ERRORS
from service.core.queue import Dispatcher
from service.core.settings import Settings
from service.core.store import RecordStore
from service.gateway.deps import DispatcherDep, SettingsDep, StoreDep, get_principal
from service.gateway.problems import problem_responses

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The gateway process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(ErrorCode.SERVICE_UNAVAILABLE))
async def readyz(store: StoreDep, dispatcher: DispatcherDep, settings: SettingsDep) -> dict[str, object]:
    """Redis answers and at least one worker replies to a ping; 503 ``service_unavailable`` otherwise,
    also when the checks take longer than ``FPF_READYZ_TIMEOUT_S`` (a frozen Redis)."""
    retry = settings.unavailable_retry_after_s
    try:
        return await asyncio.wait_for(
            run_in_threadpool(_check_ready, store, dispatcher, settings), settings.readyz_timeout_s
        )
    except TimeoutError as exc:
        raise ServiceUnavailable(
            f"the readiness checks took longer than {settings.readyz_timeout_s} s", retry_after_s=retry
        ) from exc
    except OUTAGE_ERRORS as exc:
        raise ServiceUnavailable(f"Redis does not answer: {type(exc).__name__}: {exc}", retry_after_s=retry) from exc


def _check_ready(store: RecordStore, dispatcher: Dispatcher, settings: Settings) -> dict[str, object]:
    store.ping()
    replies = dispatcher.ping_workers(settings.worker_ping_timeout_s)
    if not replies:
        raise ServiceUnavailable(
            f"no worker answered a ping within {settings.worker_ping_timeout_s} s",
            retry_after_s=settings.unavailable_retry_after_s,
        )
    return {"status": "ready", "workers": sorted(name for reply in replies for name in reply)}


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(get_principal)],
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **problem_responses(ErrorCode.UNAUTHENTICATED)},
)
def metrics(request: Request) -> Response:
    """Prometheus text: jobs by state, queue depth, job durations (any API key, once keys exist)."""
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
