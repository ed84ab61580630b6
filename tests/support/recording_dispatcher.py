"""A stand-in for the Celery queue in the store and janitor tests: it records what would be sent."""

from __future__ import annotations


class RecordingDispatcher:
    """Records the ``run_job`` deliveries the code under test sends, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def run_job(self, job_id: str, dispatch: int) -> None:
        self.sent.append((job_id, dispatch))
