"""What the gateway does for each request, independent of the transport (REST or gRPC).

The HTTP routes and the gRPC servicer both call these functions, so the two APIs share one
validation path, one job store and one set of error codes.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fpf_client.errors import (
    DeviceUnavailable,
    IdempotencyConflict,
    InvalidModel,
    JobCancelled,
    JobFailed,
    JobNotFinished,
    ModelNotFound,
    ModelNotReady,
    QuotaExceeded,
    ServiceUnavailable,
)
from service.core.artifacts import ArtifactStore
from service.core.batching import batch_key
from service.core.queue import Dispatcher
from service.core.records import Job, JobStatus, Model, ModelStatus
from service.core.settings import Settings
from service.core.store import RecordStore
from service.gateway.arrays import check_cond_ids, check_job_arrays, fingerprint
from service.gateway.auth import Principal
from service.gateway.quotas import Quotas
from service.gateway.submission import Submission

log = logging.getLogger(__name__)

#: Longest file name a model record keeps (a common file-system limit).
MAX_FILENAME_CHARS = 255


def store_model(
    store: RecordStore,
    artifacts: ArtifactStore,
    dispatcher: Dispatcher,
    source: BinaryIO,
    *,
    filename: str | None,
    hints: dict[str, Any],
    principal: Principal,
    quotas: Quotas,
) -> tuple[Model, bool]:
    """Store a model by the sha256 of its bytes and have a worker validate it; (model, validation queued).

    Each tenant has its own record (status, hints, validation) of the bytes, so nobody learns
    whether another tenant uploaded them; the file itself is kept once. The same bytes again
    give the tenant's existing model, except that an ``invalid`` one is validated again with
    the new ``hints`` (format, n_states, n_inputs, dynamics and tensor names: ``UploadHints``).
    """
    tenant = principal.tenant
    model_id, size = artifacts.put_model(source)
    model = Model(
        id=model_id,
        status=ModelStatus.VALIDATING,
        size_bytes=size,
        created_at=time.time(),
        filename=safe_filename(filename),
        tenant=tenant,
        **hints,
    )
    if store.get_model(model_id, tenant) is None:
        try:
            quotas.check_storage(tenant, size)
        except QuotaExceeded:
            if not store.model_tenants(model_id):
                artifacts.delete_model(model_id)
            raise
    if store.create_model(model):
        dispatcher.validate_model(model_id, tenant)
        return model, True
    queued = store.update_model(
        model_id, tenant, [ModelStatus.INVALID], status=ModelStatus.VALIDATING, error=None, **hints
    )
    if queued:
        dispatcher.validate_model(model_id, tenant)
    existing = store.get_model(model_id, tenant)
    return (existing if existing is not None else model), queued


def safe_filename(name: str | None) -> str | None:
    """The base name of an uploaded file's name, as the record keeps it: no directories (``/`` or ``\\``),
    no control characters, at most ``MAX_FILENAME_CHARS``; None when nothing is left (``..``)."""
    if name is None:
        return None
    base = re.split(r"[/\\]", name)[-1]
    base = "".join(c for c in base if c.isprintable())[:MAX_FILENAME_CHARS].strip()
    return None if base in ("", ".", "..") else base


def remove_model(model: Model, store: RecordStore, artifacts: ArtifactStore) -> None:
    """Remove a tenant's model, and its file when no other tenant holds the same bytes; jobs queued with it fail."""
    _, holders = store.delete_model(model.id, model.tenant)
    if holders == 0:
        artifacts.delete_model(model.id)


def enqueue_job(
    submission: Submission,
    idempotency_key: str | None,
    settings: Settings,
    store: RecordStore,
    artifacts: ArtifactStore,
    dispatcher: Dispatcher,
    *,
    principal: Principal,
    quotas: Quotas,
) -> tuple[Job, bool]:
    """Check the arrays against the model, store the job and queue it; (job, created).

    A job runs one of the caller's own models (admins included) and belongs to the caller's tenant.
    """
    tenant = principal.tenant
    model = store.get_model(submission.model_id, tenant)
    if model is None:
        raise ModelNotFound(f"no model {submission.model_id}", field="model_id")
    if model.status is ModelStatus.VALIDATING:
        raise ModelNotReady(f"model {model.id} is still being validated; retry when its status is ready")
    if model.status is ModelStatus.INVALID:
        reason = (model.error or {}).get("detail", "it failed validation")
        raise InvalidModel(f"model {model.id} is invalid: {reason}", field="model_id")
    check_device_offered(store, submission.options.device)
    initial_states, inputs = check_job_arrays(
        submission.initial_states,
        submission.inputs,
        n_states=model.n_states,
        n_inputs=model.n_inputs,
        max_initial_states=settings.max_initial_states,
        max_n_states=settings.max_n_states,
        max_n_inputs=settings.max_n_inputs,
    )
    cond_ids = check_cond_ids(submission.cond_ids, initial_states.shape[0])
    labelled = {} if cond_ids is None else {"cond_ids": cond_ids}
    options = submission.options.model_dump(mode="json")
    digest = fingerprint(model.id, json.dumps(options, sort_keys=True), initial_states, inputs, *labelled.values())

    quotas.check_job(tenant, initial_states.nbytes + inputs.nbytes)
    job = Job(
        id=uuid.uuid4().hex,
        model_id=model.id,
        status=JobStatus.QUEUED,
        tenant=tenant,
        n_initial_states=int(initial_states.shape[0]),
        options=options,
        created_at=time.time(),
        batch_key=batch_key(tenant, model.id, options),
    )
    with artifacts.atomic_write(artifacts.arrays_path(job.id)) as out:
        np.savez(out, initial_states=initial_states, inputs=inputs, **labelled)
        arrays_bytes = out.tell()
    store.create_job(job, stored_bytes=arrays_bytes)
    if idempotency_key is not None:
        bound_id, bound_digest = store.remember_idempotency(tenant, idempotency_key, job.id, digest)
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
        error = ServiceUnavailable(
            f"the job queue is unavailable: {exc}", retry_after_s=settings.unavailable_retry_after_s
        )
        store.abandon(job.id, error.to_problem())
        raise error from exc
    return job, True


def check_device_offered(store: RecordStore, device: str) -> None:
    """Refuse (``device_unavailable``) a job whose ``device`` the live workers report but none offers.

    ``auto`` and ``cpu`` run anywhere. With no worker reporting at all the job is accepted: it waits
    for workers like any job, and one without the device fails it with the same code.
    """
    if device in ("auto", "cpu"):
        return
    offered = store.live_worker_devices()
    on_offer = sorted({name for devices in offered.values() for name in devices})
    if offered and device not in on_offer:
        raise DeviceUnavailable(
            f"no worker offers device {device!r}; devices on offer: {', '.join(on_offer)}",
            field="options.device",
            devices=on_offer,
        )


def _idempotency_conflict(key: str, why: str = "with another request body") -> IdempotencyConflict:
    return IdempotencyConflict(f"Idempotency-Key {key!r} was used before {why}")


def result_path(job: Job, artifacts: ArtifactStore) -> Path:
    """The result file of a succeeded job; job_failed, job_cancelled or job_not_finished otherwise."""
    if job.status is JobStatus.FAILED:
        raise JobFailed(f"job {job.id} failed: {(job.error or {}).get('detail', 'unknown error')}", error=job.error)
    if job.status is JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} was cancelled")
    if job.status is not JobStatus.SUCCEEDED:
        raise JobNotFinished(f"job {job.id} is {job.status.value}")
    return artifacts.result_path(job.id)


def remove_job(job: Job, store: RecordStore, artifacts: ArtifactStore) -> None:
    """Remove a job and its files; a running job is asked to stop first."""
    store.cancel(job.id)
    store.delete_job(job.id)
    artifacts.delete_job(job.id)
