"""Sending work to the Celery workers, and asking whether any are listening."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

log = logging.getLogger(__name__)

VALIDATE_MODEL = "fpf.validate_model"
RUN_JOB = "fpf.run_job"


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
        self.celery.send_task(RUN_JOB, args=(job_id, dispatch), queue=self.queue, task_id=task_id(job_id, dispatch),
                              countdown=countdown_s)
        log.info("job %s: queued (dispatch %d%s)", job_id, dispatch,
                 "" if countdown_s is None else f", due in {countdown_s:g} s")

    def ping_workers(self, timeout_s: float) -> list[dict[str, Any]]:
        """The replies of the workers that answered a control ping within ``timeout_s``."""
        return self.celery.control.ping(timeout=timeout_s) or []


def task_id(job_id: str, dispatch: int) -> str:
    """The Celery task id of delivery ``dispatch`` of a job: the janitor looks for it in the queue."""
    return f"{job_id}.{dispatch}"
