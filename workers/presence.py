"""A pool process's presence in the store: its name and the devices it offers, refreshed by a thread.

The gateway reads the live entries to refuse a job that asks for a device no worker has
(``device_unavailable``), instead of accepting it and failing it later.
"""

from __future__ import annotations

import logging
import threading

from service.core.store import RecordStore

log = logging.getLogger(__name__)


class Presence:
    """Keep this worker's entry (``devices`` under ``name``) alive for ``ttl_s`` past each refresh."""

    def __init__(self, store: RecordStore, name: str, devices: list[str], *, ttl_s: float) -> None:
        self.store = store
        self.name = name
        self.devices = devices
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and remove the entry (a worker that dies instead simply expires)."""
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self.store.withdraw_worker(self.name)
        except Exception:
            log.warning("worker %s: could not withdraw its presence", self.name, exc_info=True)

    def _run(self) -> None:
        # Refreshed several times per TTL, so that one missed write (a Redis restart) loses nothing.
        while True:
            try:
                self.store.announce_worker(self.name, self.devices, self.ttl_s)
            except Exception:
                log.warning("worker %s: could not announce its devices", self.name, exc_info=True)
            if self._stop.wait(self.ttl_s / 4):
                return
