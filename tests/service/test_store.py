"""The job store's state machine and the janitor, on a real Redis (no worker, no HTTP)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from job_records import queued_job
from recording_dispatcher import RecordingDispatcher
from service_harness import REDIS_DB

from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.records import Job, JobStatus
from service.core.store import JobEnd, RecordStore

pytestmark = pytest.mark.integration


def _janitor(store: RecordStore, tmp_path: Path, max_attempts: int = 2) -> tuple[Janitor, RecordingDispatcher]:
    dispatcher = RecordingDispatcher()
    janitor = Janitor(store, ArtifactStore(tmp_path), dispatcher, JanitorPolicy(max_attempts=max_attempts))  # type: ignore[arg-type]
    return janitor, dispatcher


def _expire_heartbeat(store: RecordStore, job: Job) -> None:
    store.redis.delete(store.keys.heartbeat(job.id, job.dispatch))


def test_a_delivery_runs_once_and_stale_deliveries_are_refused(store: RecordStore) -> None:
    job = queued_job(store)
    assert store.claim(job.id, dispatch=2, worker="w", heartbeat_ttl_s=5) is None  # not yet issued
    running = store.claim(job.id, dispatch=1, worker="w", heartbeat_ttl_s=5)
    assert running is not None and running.status is JobStatus.RUNNING and running.attempts == 1
    assert store.claim(job.id, dispatch=1, worker="w2", heartbeat_ttl_s=5) is None  # a duplicate delivery
    assert store.is_alive(store.get_job(job.id))
    assert store.count_jobs()[JobStatus.RUNNING] == 1 and store.count_jobs()[JobStatus.QUEUED] == 0


def test_janitor_requeues_a_lost_job_then_fails_it_after_max_attempts(store: RecordStore, tmp_path: Path) -> None:
    janitor, dispatcher = _janitor(store, tmp_path, max_attempts=2)
    job = queued_job(store)
    store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    janitor.sweep()
    assert dispatcher.sent == []  # heartbeat alive: left alone

    _expire_heartbeat(store, store.get_job(job.id))
    janitor.sweep()
    requeued = store.get_job(job.id)
    assert (requeued.status, requeued.dispatch, dispatcher.sent) == (JobStatus.QUEUED, 2, [(job.id, 2)])
    assert store.finish(job.id, 1, JobStatus.SUCCEEDED) is None  # the lost delivery cannot finish it

    store.claim(job.id, 2, "w", heartbeat_ttl_s=5)
    _expire_heartbeat(store, store.get_job(job.id))
    janitor.sweep()
    failed = store.get_job(job.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 2
    assert failed.error["code"] == "internal" and "max_attempts=2" in failed.error["detail"]
    assert len(dispatcher.sent) == 1


def test_a_lost_job_that_was_asked_to_stop_ends_cancelled(store: RecordStore, tmp_path: Path) -> None:
    janitor, dispatcher = _janitor(store, tmp_path)
    job = queued_job(store)
    store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    assert store.cancel(job.id).status is JobStatus.RUNNING  # running: asked, not yet stopped
    assert store.report_progress(job.id, 1, {"iteration": 1}).cancel_requested
    _expire_heartbeat(store, store.get_job(job.id))
    janitor.sweep()
    assert store.get_job(job.id).status is JobStatus.CANCELLED and dispatcher.sent == []


def test_progress_of_a_deleted_job_tells_the_worker_to_stop(store: RecordStore) -> None:
    job = queued_job(store)
    store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    assert store.report_progress(job.id, 1, {"iteration": 1}).owned
    store.delete_job(job.id)
    assert not store.report_progress(job.id, 1, {"iteration": 2}).owned
    assert store.get_job(job.id) is None  # the report did not resurrect the record


def test_the_progress_of_a_batch_is_written_to_each_job_its_delivery_still_owns(store: RecordStore) -> None:
    owned, cancelling, handed_on, deleted = (queued_job(store) for _ in range(4))
    for job in (owned, cancelling, handed_on, deleted):
        store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    store.cancel(cancelling.id)
    _expire_heartbeat(store, store.get_job(handed_on.id))
    assert store.requeue_lost(store.get_job(handed_on.id), max_attempts=3).dispatch == 2
    store.delete_job(deleted.id)
    events = store.redis.pubsub(ignore_subscribe_messages=True)
    events.subscribe(*(store.keys.events(job.id) for job in (owned, cancelling, handed_on)))
    reports = [(job.id, 1, {"iteration": i}) for i, job in enumerate((owned, cancelling, handed_on, deleted))]

    acks = store.report_progress_of(reports)

    assert [(ack.owned, ack.cancel_requested) for ack in acks] == [
        (True, False),
        (True, True),
        (False, False),
        (False, False),
    ]
    assert store.get_job(owned.id).progress == {"iteration": 0} and store.get_job(cancelling.id).progress == {
        "iteration": 1
    }
    assert store.get_job(handed_on.id).progress is None and store.get_job(deleted.id) is None
    notices = [message for _ in range(6) if (message := events.get_message(timeout=0.2))]  # 3 confirmations first
    assert sorted(n["channel"] for n in notices) == sorted(store.keys.events(j.id) for j in (owned, cancelling))
    events.close()
    assert store.report_progress_of([]) == []


def test_the_ends_of_a_batch_are_recorded_in_one_transaction_for_the_deliveries_that_own_them(
    store: RecordStore,
) -> None:
    succeeded, failed, handed_on, deleted = (queued_job(store, stored_bytes=100) for _ in range(4))
    for job in (succeeded, failed, handed_on, deleted):
        store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    _expire_heartbeat(store, store.get_job(handed_on.id))
    store.requeue_lost(store.get_job(handed_on.id), max_attempts=3)
    store.claim(handed_on.id, 2, "another worker", heartbeat_ttl_s=5)  # running again, under dispatch 2
    store.delete_job(deleted.id)
    before = store.stored_bytes(succeeded.tenant)

    ends = store.finish_all(
        [
            JobEnd(succeeded.id, 1, JobStatus.SUCCEEDED, {"engine_s": 0.5, "partial": False}, result_bytes=40),
            JobEnd(failed.id, 1, JobStatus.FAILED, {"error": {"code": "internal", "detail": "x"}}),
            JobEnd(handed_on.id, 1, JobStatus.SUCCEEDED, result_bytes=1000),
            JobEnd(deleted.id, 1, JobStatus.SUCCEEDED, result_bytes=1000),
        ]
    )

    assert [None if job is None else job.status for job in ends] == [JobStatus.SUCCEEDED, JobStatus.FAILED, None, None]
    stored = {job.id: store.get_job(job.id) for job in (succeeded, failed, handed_on)}
    assert stored[succeeded.id].status is JobStatus.SUCCEEDED and stored[succeeded.id].engine_s == 0.5
    assert stored[failed.id].status is JobStatus.FAILED and stored[failed.id].error["detail"] == "x"
    assert stored[handed_on.id].status is JobStatus.RUNNING and stored[handed_on.id].dispatch == 2
    assert store.stored_bytes(succeeded.tenant) == before + 40  # only the owned result's bytes
    assert store.count_jobs()[JobStatus.RUNNING] == 1
    assert not store.is_alive(stored[succeeded.id]) and not store.is_alive(stored[failed.id])
    assert store.durations()["+Inf"] == 2
    assert store.redis.zscore(store.keys.expiry, succeeded.id) and store.redis.zscore(store.keys.expiry, failed.id)


def test_the_end_a_delivery_records_is_counted_once_in_the_duration_histogram(store: RecordStore) -> None:
    job = queued_job(store)
    store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    finished = store.finish(job.id, 1, JobStatus.SUCCEEDED)
    assert finished is not None
    assert store.finish(job.id, 1, JobStatus.FAILED) is None  # not the owner any more: nothing counted
    counts = store.durations()
    duration = finished.finished_at - finished.created_at
    assert counts["+Inf"] == 1 and counts["sum"] == pytest.approx(duration)
    assert all(counts[bound] == (duration <= float(bound)) for bound in counts if bound not in ("+Inf", "sum"))


def test_expired_results_are_deleted_with_their_files(store: RecordStore, tmp_path: Path) -> None:
    store.result_ttl_s = 0.2
    janitor, _ = _janitor(store, tmp_path)
    job = queued_job(store)
    store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
    result = janitor.artifacts.result_path(job.id)
    with janitor.artifacts.atomic_write(result) as out:
        out.write(b"result")
    store.finish(job.id, 1, JobStatus.SUCCEEDED)
    janitor.sweep()
    assert store.get_job(job.id) is not None and result.exists()
    time.sleep(0.3)
    janitor.sweep()
    assert store.get_job(job.id) is None and not result.parent.exists()
    assert job.id not in [j.id for j in store.list_jobs()]


def test_idempotency_binding_keeps_the_first_job(store: RecordStore) -> None:
    assert store.remember_idempotency("lab", "k", "job-1", "digest-1") == ("job-1", "digest-1")
    assert store.remember_idempotency("lab", "k", "job-2", "digest-2") == ("job-1", "digest-1")
    assert store.remember_idempotency("other", "k", "job-3", "digest-3") == ("job-3", "digest-3")


def test_concurrent_claims_let_exactly_one_win(store: RecordStore) -> None:
    job = queued_job(store)
    clients = [
        RecordStore.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", store.keys.prefix, result_ttl_s=60) for _ in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        won: list[Any] = list(pool.map(lambda s: s.claim(job.id, 1, "w", heartbeat_ttl_s=5), clients))
    assert sum(r is not None for r in won) == 1
    assert store.get_job(job.id).attempts == 1
