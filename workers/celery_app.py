"""The Celery application of the fpf workers (``celery -A workers.celery_app:app worker -Q gpu``).

Configured for long, expensive, at-most-one-at-a-time tasks on Redis: late acks and
requeue on a lost worker, one message prefetched per process, no result backend (the
job store holds results), a visibility timeout above the hard time limit. Prompt
recovery of a killed worker is the gateway janitor's job (see service/janitor.py):
a Redis broker alone would redeliver only after the visibility timeout.

Nothing here imports torch: the parent process forks its pool, and CUDA must never be
initialised before a fork. Each pool process prepares torch in ``worker_process_init``.
"""

from __future__ import annotations

from celery import Celery, signals

from service.settings import Settings, get_settings
from service.store import Keys


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``; the gateway uses one to send tasks by name."""
    celery = Celery("fpf", broker=settings.redis_url, include=["workers.tasks"])
    celery.conf.update(
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # The engine itself stops at FPF_SOFT_TIME_LIMIT_S (a partial result). Celery's soft limit
        # is fpf's hard one: the task fails at once; its hard limit only kills a stuck pool process.
        task_soft_time_limit=settings.hard_time_limit_s,
        task_time_limit=settings.kill_time_limit_s,
        broker_transport_options={
            "visibility_timeout": settings.broker_visibility_timeout_s,
            "global_keyprefix": Keys(settings.redis_prefix).broker,
        },
        broker_connection_retry_on_startup=True,
        # Pool processes import torch and the engine before taking work; that can take a while.
        worker_proc_alive_timeout=120,
        worker_hijack_root_logger=False,
    )
    return celery


app = make_celery(get_settings())


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
