"""The Celery tasks: thin wrappers that hand a model or a job to :mod:`workers.runner`.

At start the worker checks its model sandbox and says what it will do: with
``FPF_SANDBOX=on`` (the default) it refuses to start where bubblewrap cannot build a
sandbox; with ``FPF_SANDBOX=off`` it warns that models run unconfined in its processes.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import signals

from service.core.artifacts import ArtifactStore
from service.core.queue import RUN_JOB, VALIDATE_MODEL, Dispatcher
from service.core.records import DEFAULT_TENANT
from service.core.settings import Settings, get_settings
from service.core.store import JobStore

from . import runner, runtime
from .celery_app import app

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _runner() -> runner.JobRunner:
    """One store connection, artifact store and model runner per pool process (made after the fork)."""
    settings = get_settings()
    store = JobStore.from_url(settings.redis_url, settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
    artifacts = ArtifactStore(settings.data_dir)
    return runner.JobRunner(store, artifacts, settings, _models(settings), Dispatcher(app, settings.queue))


def _models(settings: Settings) -> runner.Models:
    if settings.sandbox == "off":
        return runner.InProcessModels()
    from .sandbox import Limits, SandboxPool

    cpu_s = settings.sandbox_cpu_s or settings.hard_time_limit_s * settings.torch_threads(runtime.POOL_CONCURRENCY)
    limits = Limits(memory_bytes=settings.sandbox_memory_bytes, cpu_s=cpu_s, disk_bytes=settings.sandbox_disk_bytes)
    return runner.SandboxedModels(SandboxPool(limits, data_dir=settings.data_dir, spare=settings.sandbox_spare))


@app.task(name=VALIDATE_MODEL)
def validate_model(model_id: str, tenant: str = DEFAULT_TENANT) -> None:
    """Load an uploaded model and mark ``tenant``'s record of it ready or invalid."""
    job_runner = _runner()
    settings = job_runner.settings
    runner.validate_model(job_runner.store, job_runner.artifacts, job_runner.models, model_id, tenant,
                          max_n_states=settings.max_n_states, max_n_inputs=settings.max_n_inputs)


@app.task(name=RUN_JOB)
def run_job(job_id: str, dispatch: int) -> None:
    """Run delivery ``dispatch`` of a job; a stale or duplicate delivery does nothing."""
    _runner().run(job_id, dispatch)


@signals.worker_init.connect
def _check_sandbox(**_) -> None:
    """Runs once in the worker's main process, before it takes work: refuse to run models unconfined."""
    from .sandbox import SandboxUnavailable, probe

    if get_settings().sandbox == "off":
        log.warning("FPF_SANDBOX=off: user models run unconfined in the worker's processes, with its files, "
                    "network and environment; use this only where every model is trusted")
        return
    try:
        version = probe()
    except SandboxUnavailable as exc:
        raise SystemExit(f"fpf worker: refusing to run user models: {exc}. "
                         "Set FPF_SANDBOX=off only if every model is trusted.") from None
    log.info("model sandbox: %s; each model runs in a child with no network, no data directory and a "
             "clean environment", version)


@signals.worker_process_init.connect
def _start_sandboxes(**_) -> None:
    """Runs in each new pool process after its torch setup: the runner, and so the spare sandbox, start warm."""
    _runner()


@signals.worker_process_shutdown.connect
def _stop_sandboxes(**_) -> None:
    models = _runner().models if _runner.cache_info().currsize else None
    if isinstance(models, runner.SandboxedModels):
        models.pool.close()
