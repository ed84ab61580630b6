"""The heartbeats of running jobs: short-lived Redis keys refreshed by a background thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from types import TracebackType

from service.core.store import RecordStore

log = logging.getLogger(__name__)


class Heartbeat:
    """Keep ``heartbeat:<job>:<dispatch>`` alive for each delivery of a batch while the block runs.

    A thread, not the engine's progress callback, refreshes them, so a long phase without
    progress reports (loading, a big decomposition) does not look like a dead worker.
    When the process dies the keys expire within ``ttl_s`` and the gateway's janitor
    re-queues every job of the batch.
    """

    def __init__(
        self, store: RecordStore, deliveries: Iterable[tuple[str, int]], *, interval_s: float, ttl_s: float
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._deliveries = dict(deliveries)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{next(iter(self._deliveries))}", daemon=True)

    def drop(self, job_id: str) -> None:
        """Stop beating for a job of the batch that has ended on its own (cancelled or deleted)."""
        with self._lock:
            self._deliveries.pop(job_id, None)

    def __enter__(self) -> Heartbeat:
        self._thread.start()  # the first beat was set with the claim, atomically
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            with self._lock:
                deliveries = list(self._deliveries.items())
            try:
                self.store.beat_all(deliveries, self.ttl_s)
            except Exception:
                log.warning("jobs %s: heartbeat failed", ", ".join(d[0] for d in deliveries), exc_info=True)
