"""FastAPI dependencies: the app's settings, stores and dispatcher (built once in
:func:`service.gateway.app.create_app`), the caller (:class:`~service.gateway.auth.Principal`)
and the records it may see.

Those that only hand out an object of the app are ``async def``: FastAPI runs a plain ``def``
dependency in its thread pool, a hop that costs more than the dependency. Those that read Redis
or a file stay plain functions, off the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.core.artifacts import ArtifactStore
from service.core.queue import Dispatcher
from service.core.records import Job, Model
from service.core.settings import Settings
from service.core.store import RecordStore
from service.gateway.auth import Principal
from service.gateway.quotas import Quotas
from service.gateway.scoping import find_job, find_model


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_store(request: Request) -> RecordStore:
    return request.app.state.store


async def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


async def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[RecordStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def get_principal(request: Request) -> Principal:
    """The caller, from the ``Authorization`` header; 401 ``unauthenticated`` once keys exist and none fits."""
    return request.app.state.authenticator(request.headers.get("authorization"))


async def get_quotas(request: Request) -> Quotas:
    return request.app.state.quotas


PrincipalDep = Annotated[Principal, Depends(get_principal)]
QuotasDep = Annotated[Quotas, Depends(get_quotas)]


def require_job(job_id: str, store: StoreDep, principal: PrincipalDep) -> Job:
    """The job named in the path, or 404 ``job_not_found`` (also when it is another tenant's)."""
    return find_job(store, principal, job_id)


def require_model(model_id: str, store: StoreDep, principal: PrincipalDep) -> Model:
    """The model named in the path, or 404 ``model_not_found`` (also when it is another tenant's)."""
    return find_model(store, principal, model_id)


JobDep = Annotated[Job, Depends(require_job)]
ModelDep = Annotated[Model, Depends(require_model)]
