"""The Celery tasks: thin wrappers that hand a model or a job to :mod:`workers.runner`."""

from __future__ import annotations

from functools import lru_cache

from service.artifacts import ArtifactStore
from service.records import DEFAULT_TENANT
from service.dispatch import RUN_JOB, VALIDATE_MODEL
from service.settings import get_settings
from service.store import JobStore

from . import runner
from .celery_app import app


@lru_cache(maxsize=1)
def _runner() -> runner.JobRunner:
    """One store connection, artifact store and model cache per pool process (made after the fork)."""
    settings = get_settings()
    store = JobStore.from_url(settings.redis_url, settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
    artifacts = ArtifactStore(settings.data_dir)
    return runner.JobRunner(store, artifacts, settings, runner.ModelCache(store, artifacts))


@app.task(name=VALIDATE_MODEL)
def validate_model(model_id: str, tenant: str = DEFAULT_TENANT) -> None:
    """Load an uploaded model and mark ``tenant``'s record of it ready or invalid."""
    job_runner = _runner()
    runner.validate_model(job_runner.store, job_runner.artifacts, model_id, tenant)


@app.task(name=RUN_JOB)
def run_job(job_id: str, dispatch: int) -> None:
    """Run delivery ``dispatch`` of a job; a stale or duplicate delivery does nothing."""
    _runner().run(job_id, dispatch)
