"""A queued job record written straight into a record store, for the store, janitor and quota tests."""

from __future__ import annotations

import time
import uuid

from service.core.records import DEFAULT_TENANT, Job, JobStatus
from service.core.store import RecordStore


def queued_job(store: RecordStore, *, tenant: str = DEFAULT_TENANT, age_s: float = 0.0, stored_bytes: int = 0) -> Job:
    """Create a queued one-state job of model ``m``, created ``age_s`` ago, whose arrays take ``stored_bytes``."""
    job = Job(
        id=uuid.uuid4().hex,
        model_id="m",
        status=JobStatus.QUEUED,
        n_initial_states=1,
        options={},
        created_at=time.time() - age_s,
        tenant=tenant,
    )
    assert store.create_job(job, stored_bytes=stored_bytes)
    return job
