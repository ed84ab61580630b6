"""A running job's heartbeat: a short-lived Redis key refreshed by a background thread."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

from service.core.store import RecordStore

log = logging.getLogger(__name__)


class Heartbeat:
    """Keep ``heartbeat:<job>:<dispatch>`` alive while the block runs.

    A thread, not the engine's progress callback, refreshes it, so a long phase without
    progress reports (loading, a big decomposition) does not look like a dead worker.
    When the process dies the key expires within ``ttl_s`` and the gateway's janitor
    re-queues the job.
    """

    def __init__(self, store: RecordStore, job_id: str, dispatch: int, *, interval_s: float, ttl_s: float) -> None:
        self.store = store
        self.job_id = job_id
        self.dispatch = dispatch
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

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
            try:
                self.store.beat(self.job_id, self.dispatch, self.ttl_s)
            except Exception:
                log.warning("job %s: heartbeat failed", self.job_id, exc_info=True)
