"""The Celery tasks: thin wrappers that hand a model or a job to :mod:`workers.runner`.

At start the worker checks its model sandbox and says what it will do: with
``FPF_SANDBOX=on`` (the default) it refuses to start where bubblewrap cannot build a
sandbox; with ``FPF_SANDBOX=off`` it warns that models run unconfined in its processes.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from celery import Task, signals
from celery.exceptions import TimeLimitExceeded

from service.core.artifacts import ArtifactStore
from service.core.queue import RUN_JOB, VALIDATE_MODEL, Dispatcher
from service.core.records import DEFAULT_TENANT
from service.core.settings import SANDBOX_START_ALLOWANCE_S, Settings, get_settings
from service.core.store import RecordStore

from . import runner, runtime
from .celery_app import app
from .presence import Presence

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _runner() -> runner.JobRunner:
    """One store connection, artifact store and model runner per pool process (made after the fork)."""
    settings = get_settings()
    store = RecordStore.from_url(settings.redis_url, settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
    artifacts = ArtifactStore(settings.data_dir)
    return runner.JobRunner(store, artifacts, settings, _models(settings), Dispatcher(app, settings.queue))


def _models(settings: Settings) -> runner.Models:
    if settings.sandbox == "off":
        return runner.InProcessModels()
    from .sandbox import Limits, SandboxPool

    cpu_s = settings.sandbox_cpu_s or settings.hard_time_limit_s * settings.torch_threads(runtime.POOL_CONCURRENCY)
    limits = Limits(memory_bytes=settings.sandbox_memory_bytes, cpu_s=cpu_s, disk_bytes=settings.sandbox_disk_bytes)
    return runner.SandboxedModels(
        SandboxPool(
            limits, data_dir=settings.data_dir, spare=settings.sandbox_spare, warm_owners=settings.sandbox_warm_owners
        )
    )


#: Most seconds between Celery's soft limit of a validation and its killing the pool process
#: (``FPF_KILL_GRACE_S`` when shorter): a stuck validation holds a worker that jobs are waiting for.
VALIDATION_KILL_GRACE_S = 10.0


def validation_task_limits(settings: Settings) -> tuple[float, float]:
    """Celery's (soft, hard) time limits of a validation: a backstop behind the sandbox's own deadline,
    and the only limit when models load in the pool process (``FPF_SANDBOX=off``)."""
    soft = settings.validation_time_limit_s
    if settings.sandbox == "on":
        soft += SANDBOX_START_ALLOWANCE_S
    return soft, soft + min(settings.kill_grace_s, VALIDATION_KILL_GRACE_S)


class ValidationTask(Task):
    """The validation task: a pool process killed at the hard limit still gets its model settled."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """Runs in the worker's main process after Celery killed a validation stuck past its hard limit
        (a model step in native code never reached the soft limit's exception)."""
        if not isinstance(exc, TimeLimitExceeded):
            return
        model_id, tenant, attempt = _validation_arguments(*args, **kwargs)
        settings = get_settings()
        store = RecordStore.from_url(settings.redis_url, settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
        try:
            runner.validation_timed_out(
                store,
                Dispatcher(app, settings.queue),
                model_id,
                tenant,
                time_limit_s=settings.validation_time_limit_s,
                attempt=attempt,
            )
        finally:
            store.redis.close()


def _validation_arguments(model_id: str, tenant: str = DEFAULT_TENANT, attempt: int = 1) -> tuple[str, str, int]:
    return model_id, tenant, attempt


_SOFT_LIMIT_S, _HARD_LIMIT_S = validation_task_limits(get_settings())


@app.task(name=VALIDATE_MODEL, base=ValidationTask, soft_time_limit=_SOFT_LIMIT_S, time_limit=_HARD_LIMIT_S)
def validate_model(model_id: str, tenant: str = DEFAULT_TENANT, attempt: int = 1) -> None:
    """Load an uploaded model and mark ``tenant``'s record of it ready or invalid (attempt ``attempt``)."""
    job_runner = _runner()
    settings = job_runner.settings
    runner.validate_model(
        job_runner.store,
        job_runner.artifacts,
        job_runner.models,
        job_runner.dispatcher,
        model_id,
        tenant,
        time_limit_s=settings.validation_time_limit_s,
        attempt=attempt,
        max_n_states=settings.max_n_states,
        max_n_inputs=settings.max_n_inputs,
    )


@app.task(name=RUN_JOB)
def run_job(job_id: str, dispatch: int) -> None:
    """Run delivery ``dispatch`` of a job; a stale or duplicate delivery does nothing."""
    _runner().run(job_id, dispatch)


@signals.worker_init.connect
def _check_sandbox(**_) -> None:
    """Runs once in the worker's main process, before it takes work: refuse to run models unconfined."""
    from .sandbox import SandboxUnavailable, probe

    if get_settings().sandbox == "off":
        log.warning(
            "FPF_SANDBOX=off: user models run unconfined in the worker's processes, with its files, "
            "network and environment; use this only where every model is trusted"
        )
        return
    try:
        version = probe()
    except SandboxUnavailable as exc:
        raise SystemExit(
            f"fpf worker: refusing to run user models: {exc}. Set FPF_SANDBOX=off only if every model is trusted."
        ) from None
    log.info(
        "model sandbox: %s; each model runs in a child with no network, no data directory and a clean environment",
        version,
    )


#: This pool process's entry in the store's table of live workers.
_PRESENCE: Presence | None = None


@signals.worker_process_init.connect
def _start_sandboxes(**_) -> None:
    """Runs in each new pool process after its torch setup: the runner, and so the spare sandbox, start warm;
    then the process announces the devices it offers."""
    global _PRESENCE
    from .engine.devices import available_devices

    job_runner = _runner()
    _PRESENCE = Presence(
        job_runner.store, job_runner.worker, available_devices(), ttl_s=job_runner.settings.worker_presence_ttl_s
    )
    _PRESENCE.start()


@signals.worker_process_shutdown.connect
def _stop_sandboxes(**_) -> None:
    if _PRESENCE is not None:
        _PRESENCE.stop()
    models = _runner().models if _runner.cache_info().currsize else None
    if isinstance(models, runner.SandboxedModels):
        models.pool.close()
