"""The Celery application of the fpf workers (``celery -A workers.celery_app:app worker -Q gpu``).

The app is :func:`service.core.queue.make_celery`'s, the one the gateway sends with, plus the
task modules (:mod:`workers.tasks`), the workers' remote-control command (:mod:`workers.control`)
and the pool's start-up hooks.

Nothing here imports torch: the parent process forks its pool, and CUDA must never be
initialised before a fork. Each pool process prepares torch in ``worker_process_init``.
"""

from __future__ import annotations

from celery import signals

from service.core.queue import make_celery
from service.core.settings import get_settings

app = make_celery(get_settings(), include=("workers.tasks", "workers.control"))


@signals.celeryd_after_setup.connect
def _remember_concurrency(instance, **_) -> None:
    """Runs in the parent before it forks: each pool process gets cores / concurrency threads."""
    from . import runtime

    runtime.POOL_CONCURRENCY = int(getattr(instance, "concurrency", 1) or 1)


@signals.worker_process_init.connect
def _prepare_pool_process(**_) -> None:
    """Runs in each new pool process: thread counts, then torch and the engine, warm."""
    from . import runtime

    runtime.prepare_pool_process(get_settings())
