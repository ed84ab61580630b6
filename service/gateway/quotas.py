"""Per-tenant quotas on queued jobs and stored bytes, checked before anything is written.

Over quota is ``429 quota_exceeded`` with ``Retry-After``. Usage is counted from the records
and files themselves at each check (no counters that could drift after a crash); two
requests of one tenant arriving together may each pass a check that only one of them should.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpf_client.errors import QuotaExceeded
from service.core.artifacts import ArtifactStore
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

    def __init__(self, limits: QuotaLimits, store: RecordStore, artifacts: ArtifactStore) -> None:
        self.limits = limits
        self.store = store
        self.artifacts = artifacts

    def stored_bytes(self, tenant: str) -> int:
        """Bytes a tenant keeps: its model records' sizes, its jobs' arrays and results."""
        models = sum(m.size_bytes for m in self.store.list_models(tenant))
        return models + sum(_files_bytes(self.artifacts.job_dir(i)) for i in self.store.job_ids(tenant))

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


def _files_bytes(directory: Path) -> int:
    """Total size of the files in ``directory`` (0 when it is gone, or going, as we look)."""
    total = 0
    try:
        for entry in directory.iterdir():
            try:
                total += entry.stat().st_size
            except FileNotFoundError:
                continue
    except FileNotFoundError:
        pass
    return total
