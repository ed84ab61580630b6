"""What a caller may see: its own tenant's models and jobs, everyone's for an admin.

A record of another tenant is reported exactly like a missing one (404), so ids cannot be
probed for existence. REST (through :mod:`service.gateway.deps`) and gRPC both go through here.
"""

from __future__ import annotations

from fpf_client.errors import JobNotFound, ModelNotFound
from service.core.records import Job, JobStatus, Model
from service.core.store import RecordStore
from service.gateway.auth import Principal


def find_job(store: RecordStore, principal: Principal, job_id: str) -> Job:
    """The job ``job_id`` if the caller may see it; ``job_not_found`` otherwise."""
    job = store.get_job(job_id)
    if job is None or not principal.may_see(job.tenant):
        raise JobNotFound(f"no job {job_id}")
    return job


def find_model(store: RecordStore, principal: Principal, model_id: str) -> Model:
    """The caller's record of model ``model_id``; for an admin without one, another tenant's.

    Raises ``model_not_found`` when the caller may see no record of it.
    """
    model = store.get_model(model_id, principal.tenant)
    if model is None and principal.is_admin:
        holders = store.model_tenants(model_id)
        model = store.get_model(model_id, holders[0]) if holders else None
    if model is None:
        raise ModelNotFound(f"no model {model_id}")
    return model


def visible_jobs(store: RecordStore, principal: Principal, status: JobStatus | None, limit: int) -> list[Job]:
    """The caller's jobs (everyone's for an admin), newest first."""
    return store.list_jobs(status, limit, tenant=None if principal.is_admin else principal.tenant)


def visible_models(store: RecordStore, principal: Principal) -> list[Model]:
    """The caller's models (everyone's for an admin), newest first."""
    return store.list_models(None if principal.is_admin else principal.tenant)
