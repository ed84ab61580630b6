"""FastAPI dependencies: the app's settings, stores and dispatcher, built once in :func:`service.app.create_app`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fpf_client.errors import JobNotFound, ModelNotFound

from .artifacts import ArtifactStore
from .dispatch import Dispatcher
from .records import Job, Model
from .settings import Settings
from .store import JobStore


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_artifacts(request: Request) -> ArtifactStore:
    return request.app.state.artifacts


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[JobStore, Depends(get_store)]
ArtifactsDep = Annotated[ArtifactStore, Depends(get_artifacts)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def require_job(job_id: str, store: StoreDep) -> Job:
    """The job named in the path, or 404 ``job_not_found``."""
    job = store.get_job(job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


def require_model(model_id: str, store: StoreDep) -> Model:
    """The model named in the path, or 404 ``model_not_found``."""
    model = store.get_model(model_id)
    if model is None:
        raise ModelNotFound(f"no model {model_id}")
    return model


JobDep = Annotated[Job, Depends(require_job)]
ModelDep = Annotated[Model, Depends(require_model)]
