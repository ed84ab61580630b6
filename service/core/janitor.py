"""Recovery of lost jobs and messages, removal of expired results and orphaned files, and the
reconciliation of the stored-bytes counts with the records.

It runs in the gateway, not in the workers: the gateway is the one process that is up
when every worker is gone (a killed worker cannot re-queue its own job), and it never
forks. A job re-queued while no worker is up runs as soon as one starts, instead of
after the broker's visibility timeout. Several gateways may run it at once: each change
is a compare-and-set in the store, so one job is re-queued once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from service.core.artifacts import ArtifactStore
from service.core.outages import OUTAGE_ERRORS
from service.core.queue import Dispatcher, task_id
from service.core.records import JobStatus
from service.core.settings import Settings
from service.core.store import RecordStore

log = logging.getLogger(__name__)

#: Seconds between two sweeps of the job directories (each looks at every directory).
ORPHAN_SWEEP_INTERVAL_S = 60.0


@dataclass(frozen=True)
class JanitorPolicy:
    """When the janitor acts (seconds); the defaults never fail, re-send or sweep anything."""

    max_attempts: int = 3
    #: A lost run that had been going this long (plus ``start_allowance_s``) hit its time limit: it
    #: fails instead of running again.
    hard_time_limit_s: float = math.inf
    #: Seconds a run may spend starting its model's sandbox before its time limits begin.
    start_allowance_s: float = 0.0
    #: A queued job whose message is in no queue this long after it was due is sent again.
    resend_queued_after_s: float = math.inf
    #: Job directories without a job record this old are deleted.
    orphan_after_s: float = math.inf
    queue: str = "gpu"

    @classmethod
    def of(cls, settings: Settings) -> JanitorPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            hard_time_limit_s=settings.hard_time_limit_s,
            start_allowance_s=settings.start_allowance_s,
            resend_queued_after_s=settings.resend_queued_after_s,
            orphan_after_s=settings.orphan_after_s,
            queue=settings.queue,
        )


class Janitor:
    """Re-queue lost running jobs, re-send lost messages, delete expired jobs and orphaned job files."""

    def __init__(
        self, store: RecordStore, artifacts: ArtifactStore, dispatcher: Dispatcher, policy: JanitorPolicy
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.dispatcher = dispatcher
        self.policy = policy
        self._next_orphan_sweep = 0.0
        #: Whether queued jobs stored before the due index existed have been put in it (once per start).
        self._queued_indexed = False

    def sweep(self) -> None:
        """One pass over running, queued and expired jobs, and (every ``ORPHAN_SWEEP_INTERVAL_S``) the
        job directories and the tenants' stored-bytes counts."""
        self.recover_lost_jobs()
        self.resend_lost_messages()
        self.delete_expired_jobs()
        if time.monotonic() >= self._next_orphan_sweep:
            self._next_orphan_sweep = time.monotonic() + ORPHAN_SWEEP_INTERVAL_S
            self.delete_orphaned_files()
            self.reconcile_stored_bytes()

    def recover_lost_jobs(self) -> None:
        """Running jobs whose heartbeat expired: run again, or fail past their time limit or attempts."""
        for job_id in self.store.running_job_ids():
            job = self.store.get_job(job_id)
            if job is None or job.status is not JobStatus.RUNNING or self.store.is_alive(job):
                continue
            settled = self.store.requeue_lost(
                job, self.policy.max_attempts, self.policy.hard_time_limit_s, self.policy.start_allowance_s
            )
            if settled is None:
                continue
            log.warning(
                "job %s: worker %s lost during attempt %d; now %s",
                job_id,
                job.worker,
                job.attempts,
                settled.status.value,
            )
            if settled.status is JobStatus.QUEUED:
                self.dispatcher.run_job(job_id, settled.dispatch)

    def resend_lost_messages(self) -> None:
        """Queued jobs whose message no queue holds long after it was due: the gateway died before
        sending it, or a worker that took it died (or sits on it) without starting the job."""
        if not self._queued_indexed:
            self.store.index_queued_jobs()
            self._queued_indexed = True
        bound = time.time() - self.policy.resend_queued_after_s
        overdue = [job for job in self.store.overdue_queued_jobs(bound) if (job.sent_at or job.created_at) < bound]
        if not overdue:
            return
        waiting = self.store.waiting_task_ids(self.policy.queue)
        for job in overdue:
            if task_id(job.id, job.dispatch) in waiting:
                continue
            resent = self.store.resend(job)
            if resent is not None:
                log.warning(
                    "job %s: message of dispatch %d lost; sent again as dispatch %d",
                    job.id,
                    job.dispatch,
                    resent.dispatch,
                )
                self.dispatcher.run_job(job.id, resent.dispatch)

    def delete_expired_jobs(self) -> None:
        for job_id in self.store.expired_job_ids():
            self.artifacts.delete_job(job_id)
            self.store.delete_job(job_id)
            log.info("job %s: result expired and deleted", job_id)

    def delete_orphaned_files(self) -> None:
        """Job directories with no job record, and staged files never renamed into place, older than
        the bound: what a job deleted while its worker was still writing, or a gateway that died
        mid-submission or mid-upload, left behind."""
        bound = time.time() - self.policy.orphan_after_s
        old = [d for d in self.artifacts.job_dirs() if _modified_before(d, bound)]
        recorded = self.store.existing_job_ids([d.name for d in old])
        for directory in old:
            if directory.name not in recorded:
                shutil.rmtree(directory, ignore_errors=True)
                log.info("job %s: orphaned files deleted", directory.name)
        for staged in self.artifacts.staged_files():
            if _modified_before(staged, bound):  # its writer (a gateway killed mid-upload) is gone
                staged.unlink(missing_ok=True)
                log.info("half-written file %s deleted", staged)

    def reconcile_stored_bytes(self) -> None:
        """Bring each tenant's stored-bytes count back in line with its records: an entry whose record
        went without it (not through the store's own deletions) stops counting."""
        for tenant in self.store.stored_tenants():
            dropped = self.store.reconcile_stored(tenant)
            if dropped:
                log.warning("tenant %s: %d stored-bytes entries without a record dropped", tenant, dropped)

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` until cancelled; a failed sweep is logged and retried."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except OUTAGE_ERRORS as exc:  # expected while Redis is down: one line, not a traceback a second
                log.warning("janitor sweep skipped: Redis unreachable (%s: %s)", type(exc).__name__, exc)
            except Exception:
                log.exception("janitor sweep failed")
            await asyncio.sleep(interval_s)


def _modified_before(path: Path, bound: float) -> bool:
    """Whether ``path`` was last modified before ``bound`` (epoch seconds); False when it is gone."""
    try:
        return path.stat().st_mtime < bound
    except FileNotFoundError:
        return False
