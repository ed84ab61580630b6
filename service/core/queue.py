"""The queue between gateway and workers: the Celery app factory, task names, and sending work by name."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Celery

from service.core.settings import Settings
from service.core.store import Keys

log = logging.getLogger(__name__)

VALIDATE_MODEL = "fpf.validate_model"
RUN_JOB = "fpf.run_job"
#: The workers' remote-control command (:mod:`workers.control`) that drops deliveries on arrival.
DISCARD_DELIVERIES = "fpf_discard_deliveries"


def make_celery(settings: Settings, include: Sequence[str] = ()) -> Celery:
    """A Celery app for ``settings``: the gateway sends tasks by name with one, the workers add their
    task modules through ``include``.

    Configured for long, expensive, at-most-one-at-a-time tasks on Redis: late acks and requeue on
    a lost worker, one message prefetched per process, no result backend (the job store holds
    results), a visibility timeout above the hard time limit. Prompt recovery of a killed worker
    is the janitor's job (:mod:`service.core.janitor`): a Redis broker alone would redeliver only
    after the visibility timeout.
    """
    celery = Celery("fpf", broker=settings.redis_url, include=list(include))
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
        # is fpf's hard one (plus a sandbox's start): the task fails at once; its hard limit only
        # kills a stuck pool process.
        task_soft_time_limit=settings.run_task_time_limit_s,
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


class Dispatcher:
    """The gateway's side of the queue: it sends tasks by name and never imports their code."""

    def __init__(self, celery: Celery, queue: str) -> None:
        self.celery = celery
        self.queue = queue

    def validate_model(self, model_id: str, tenant: str, attempt: int = 1) -> None:
        """Queue attempt ``attempt`` at validating ``tenant``'s record of a model."""
        self.celery.send_task(VALIDATE_MODEL, args=(model_id, tenant, attempt), queue=self.queue)

    def run_job(self, job_id: str, dispatch: int, countdown_s: float | None = None) -> None:
        """Queue delivery number ``dispatch`` of a job (due ``countdown_s`` from now); a worker runs it
        only if it is still current. The message's task id is :func:`task_id`."""
        self.celery.send_task(
            RUN_JOB, args=(job_id, dispatch), queue=self.queue, task_id=task_id(job_id, dispatch), countdown=countdown_s
        )
        log.info(
            "job %s: queued (dispatch %d%s)",
            job_id,
            dispatch,
            "" if countdown_s is None else f", due in {countdown_s:g} s",
        )

    def discard_deliveries(self, deliveries: Sequence[tuple[str, int]]) -> None:
        """Tell every worker to drop the messages of these ``(job id, dispatch)`` deliveries unrun when
        they arrive: their jobs were taken into a batch. Best effort: a message a worker takes first
        is skipped as stale by its claim, as before."""
        task_ids = [task_id(job_id, dispatch) for job_id, dispatch in deliveries]
        self.celery.control.broadcast(DISCARD_DELIVERIES, arguments={"task_ids": task_ids})

    def ping_workers(self, timeout_s: float) -> list[dict[str, Any]]:
        """The replies of the workers that answered a control ping within ``timeout_s``.

        Each ping opens a connection of its own: a pooled one may have died with a Redis that
        has since come back, and would fail the first ping after the outage.
        """
        with self.celery.connection_for_write() as connection:
            return self.celery.control.ping(timeout=timeout_s, connection=connection) or []


def task_id(job_id: str, dispatch: int) -> str:
    """The Celery task id of delivery ``dispatch`` of a job: the janitor looks for it in the queue."""
    return f"{job_id}.{dispatch}"
