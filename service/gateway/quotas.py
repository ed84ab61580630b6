"""Per-tenant quotas on queued jobs and stored bytes, checked before anything is written.

Over quota is ``429 quota_exceeded`` with ``Retry-After``. Each check reads counts the job store
keeps beside the records, in one Redis round trip however many jobs the tenant keeps; two requests
of one tenant arriving together may each pass a check that only one of them should.

Stored bytes are one entry per record in a per-tenant hash (service/core/store.py): a model's
size, a job's arrays file, plus its result file once a worker writes it. They cannot drift:

* an entry is written in the transaction that creates its record and dropped in the one that
  deletes it (a job deleted, or expired and swept by the janitor; a model deleted), and a
  result's bytes are added in the transaction that records the job's end, which fails when the
  record is gone; so a crash between writing a file and recording it leaves the file uncounted
  (it is an orphan, which the janitor deletes), never bytes counted without a record;
* the janitor's reconciliation (``RecordStore.reconcile_stored``, once a minute) drops any entry
  whose record went another way and recomputes the total from the entries, so a stale entry
  counts for at most one sweep.

A result file written by a run that then lost the job (it was re-queued and finished elsewhere)
is counted as the finishing run's result, which replaced it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fpf_client.errors import QuotaExceeded
from service.core.records import JobStatus
from service.core.settings import Settings
from service.core.store import RecordStore


@dataclass(frozen=True)
class QuotaLimits:
    """The limits of one tenant (the same for every tenant)."""

    queued_jobs: int
    stored_bytes: int
    retry_after_s: int

    @classmethod
    def of(cls, settings: Settings) -> QuotaLimits:
        return cls(
            queued_jobs=settings.quota_queued_jobs,
            stored_bytes=settings.quota_stored_bytes,
            retry_after_s=settings.quota_retry_after_s,
        )


class Quotas:
    """Checks a tenant's usage against :class:`QuotaLimits`."""

    def __init__(self, limits: QuotaLimits, store: RecordStore) -> None:
        self.limits = limits
        self.store = store

    def stored_bytes(self, tenant: str) -> int:
        """Bytes a tenant keeps: its model records' sizes, its jobs' arrays and results."""
        return self.store.stored_bytes(tenant)

    def check_job(self, tenant: str, new_bytes: int) -> None:
        """Before queueing a job whose arrays take ``new_bytes``: room in the queue and the storage."""
        queued = self.store.count_jobs(tenant)[JobStatus.QUEUED]
        if queued >= self.limits.queued_jobs:
            raise self._exceeded(
                f"tenant {tenant} has {queued} queued jobs; the quota is {self.limits.queued_jobs}",
                "queued_jobs",
                self.limits.queued_jobs,
            )
        self.check_storage(tenant, new_bytes)

    def check_storage(self, tenant: str, new_bytes: int) -> None:
        """Before storing ``new_bytes`` more for ``tenant``."""
        used = self.stored_bytes(tenant)
        if used + new_bytes > self.limits.stored_bytes:
            raise self._exceeded(
                f"tenant {tenant} stores {used} bytes; {new_bytes} more would pass the quota of "
                f"{self.limits.stored_bytes} (delete jobs or models, or wait for results to expire)",
                "stored_bytes",
                self.limits.stored_bytes,
            )

    def _exceeded(self, detail: str, quota: str, limit: int) -> QuotaExceeded:
        return QuotaExceeded(detail, quota=quota, limit=limit, retry_after_s=self.limits.retry_after_s)
