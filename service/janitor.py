"""Recovery of jobs whose worker died, and removal of expired results.

It runs in the gateway, not in the workers: the gateway is the one process that is up
when every worker is gone (a killed worker cannot re-queue its own job), and it never
forks. A job re-queued while no worker is up runs as soon as one starts, instead of
after the broker's visibility timeout. Several gateways may run it at once: each change
is a compare-and-set in the store, so one job is re-queued once.
"""

from __future__ import annotations

import asyncio
import logging

from .artifacts import ArtifactStore
from .dispatch import Dispatcher
from .records import JobStatus
from .store import JobStore

log = logging.getLogger(__name__)


class Janitor:
    """Re-queue running jobs whose heartbeat expired (up to ``max_attempts``), delete expired ones."""

    def __init__(self, store: JobStore, artifacts: ArtifactStore, dispatcher: Dispatcher, max_attempts: int) -> None:
        self.store = store
        self.artifacts = artifacts
        self.dispatcher = dispatcher
        self.max_attempts = max_attempts

    def sweep(self) -> None:
        """One pass over running and expired jobs."""
        self.recover_lost_jobs()
        self.delete_expired_jobs()

    def recover_lost_jobs(self) -> None:
        for job_id in self.store.running_job_ids():
            job = self.store.get_job(job_id)
            if job is None or job.status is not JobStatus.RUNNING or self.store.is_alive(job):
                continue
            settled = self.store.requeue_lost(job, self.max_attempts)
            if settled is None:
                continue
            log.warning("job %s: worker %s lost during attempt %d; now %s",
                        job_id, job.worker, job.attempts, settled.status.value)
            if settled.status is JobStatus.QUEUED:
                self.dispatcher.run_job(job_id, settled.dispatch)

    def delete_expired_jobs(self) -> None:
        for job_id in self.store.expired_job_ids():
            self.artifacts.delete_job(job_id)
            self.store.delete_job(job_id)
            log.info("job %s: result expired and deleted", job_id)

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled; a failed sweep is logged and retried."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:
                log.exception("janitor sweep failed")
            await asyncio.sleep(interval_s)
