"""The workers' own remote-control command: drop the queue messages of jobs taken into a batch.

A job claimed as a batch companion still has its own message in the queue. Without this, a pool
process would take it, find the job running and skip it: a round trip to the pool and a Redis
transaction per batched job. Flagged here, the worker's main process acknowledges the message on
arrival without running it (Celery's revoked set, which its consumer checks before the pool).
"""

from __future__ import annotations

from typing import Any

from celery.worker import state as worker_state
from celery.worker.control import control_command

from service.core.queue import DISCARD_DELIVERIES


@control_command(name=DISCARD_DELIVERIES, args=[("task_ids", list)], signature="<task_id> [<task_id> ...]")
def discard_deliveries(state: Any, task_ids: list[str]) -> dict[str, str]:
    """Add ``task_ids`` to the worker's revoked set: their messages are acknowledged unrun.

    Unlike Celery's ``revoke``, it asks no result backend for their state (fpf has none).
    """
    worker_state.revoked.update(task_ids)
    return {"ok": f"{len(task_ids)} deliveries discarded"}
