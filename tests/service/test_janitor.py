"""The janitor and the claim-time quota on a real Redis, with real Celery messages in its broker
(no worker): lost runs past the hard time limit fail, lost messages are sent again, waiting ones are
left alone, orphaned job directories are swept, and a tenant at its running limit is deferred."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from job_records import queued_job
from service_harness import REDIS_DB

from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.queue import Dispatcher, make_celery, task_id
from service.core.records import Job, JobStatus
from service.core.settings import SANDBOX_START_ALLOWANCE_S, Settings
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

RESEND_AFTER_S = 5.0


@pytest.fixture
def settings() -> Settings:
    return Settings(
        redis_url=f"redis://127.0.0.1:6379/{REDIS_DB}",
        redis_prefix=f"fpftest-janitor-{uuid.uuid4().hex[:8]}",
        soft_time_limit_s=10,
        hard_time_limit_s=20,
        resend_queued_after_s=RESEND_AFTER_S,
        orphan_after_s=60,
    )


@pytest.fixture
def store(settings: Settings) -> Iterator[RecordStore]:
    job_store = RecordStore.from_url(settings.redis_url, settings.redis_prefix, result_ttl_s=60)
    yield job_store
    keys = list(job_store.redis.scan_iter(match=f"{settings.redis_prefix}*"))
    if keys:
        job_store.redis.delete(*keys)
    job_store.redis.close()


@pytest.fixture
def dispatcher(settings: Settings) -> Dispatcher:
    return Dispatcher(make_celery(settings), settings.queue)


@pytest.fixture
def janitor(store: RecordStore, dispatcher: Dispatcher, settings: Settings, tmp_path: Path) -> Janitor:
    return Janitor(store, ArtifactStore(tmp_path), dispatcher, JanitorPolicy.of(settings))


def _backdate(store: RecordStore, job: Job, **fields: float) -> None:
    store.redis.hset(store.keys.job(job.id), mapping={k: str(v) for k, v in fields.items()})


def test_a_lost_run_past_the_hard_limit_fails_at_once_instead_of_running_again(
    store: RecordStore, janitor: Janitor
) -> None:
    overran, slow_start, young = queued_job(store), queued_job(store), queued_job(store)
    for job in (overran, slow_start, young):
        store.claim(job.id, 1, "w", heartbeat_ttl_s=5)
        store.redis.delete(store.keys.heartbeat(job.id, 1))  # the worker was killed
    # past the hard limit of 20 s and the sandbox's start allowance
    _backdate(store, overran, started_at=time.time() - 21 - SANDBOX_START_ALLOWANCE_S)
    _backdate(store, slow_start, started_at=time.time() - 21)  # its limits may have begun later
    janitor.recover_lost_jobs()

    failed = store.get_job(overran.id)
    assert failed.status is JobStatus.FAILED and failed.attempts == 1
    assert failed.error["code"] == "time_limit_exceeded" and failed.error["limit"] == 20
    for lost in (slow_start, young):
        assert store.get_job(lost.id).status is JobStatus.QUEUED  # an early loss is still run again


def test_a_queued_job_whose_message_was_never_sent_is_sent_again(
    store: RecordStore, janitor: Janitor, settings: Settings
) -> None:
    lost = queued_job(store, age_s=RESEND_AFTER_S + 1)  # the gateway died before sending it
    janitor.resend_lost_messages()
    resent = store.get_job(lost.id)
    assert resent.status is JobStatus.QUEUED and resent.dispatch == 2
    assert store.waiting_task_ids(settings.queue) == {task_id(lost.id, 2)}
    janitor.resend_lost_messages()  # now it waits in the queue: left alone
    assert store.get_job(lost.id).dispatch == 2


def test_queued_jobs_waiting_in_the_queue_or_not_yet_overdue_are_left_alone(
    store: RecordStore, janitor: Janitor, dispatcher: Dispatcher, settings: Settings
) -> None:
    waiting = queued_job(store, age_s=10 * RESEND_AFTER_S)  # a long queue: old, but its message waits
    dispatcher.run_job(waiting.id, 1)
    fresh = queued_job(store)  # its message may still be on its way
    janitor.resend_lost_messages()
    assert store.get_job(waiting.id).dispatch == 1 and store.get_job(fresh.id).dispatch == 1
    assert store.waiting_task_ids(settings.queue) == {task_id(waiting.id, 1)}


def test_a_message_taken_by_a_worker_that_never_started_it_is_sent_again(
    store: RecordStore, janitor: Janitor, dispatcher: Dispatcher, settings: Settings
) -> None:
    job = queued_job(store, age_s=RESEND_AFTER_S + 1)
    dispatcher.run_job(job.id, 1)
    queue = store.keys.broker + settings.queue
    store.redis.rpop(queue)  # a worker took the message (kombu pops from the right) and died holding it
    janitor.resend_lost_messages()
    assert store.get_job(job.id).dispatch == 2
    assert store.waiting_task_ids(settings.queue) == {task_id(job.id, 2)}
    # The old delivery, should the broker restore it, is stale and is refused.
    assert store.claim(job.id, 1, "w", heartbeat_ttl_s=5) is None
    assert store.claim(job.id, 2, "w", heartbeat_ttl_s=5).status is JobStatus.RUNNING


def test_the_due_index_holds_exactly_the_queued_jobs_through_every_transition(store: RecordStore) -> None:
    """Claimed, batched, deferred, lost and re-queued, cancelled, deleted: the index the janitor reads
    agrees with the queued set, each job due at its ``sent_at`` (else ``created_at``)."""

    def agrees() -> bool:
        due = dict(store.redis.zrange(store.keys.queued_due, 0, -1, withscores=True))
        queued = store.redis.smembers(store.keys.jobs_in(JobStatus.QUEUED))
        records = {job_id: store.get_job(job_id) for job_id in queued}
        return due.keys() == queued and all(
            due[i] == pytest.approx(job.sent_at or job.created_at) for i, job in records.items()
        )

    def batched() -> Job:
        job = queued_job(store)
        store.redis.hset(store.keys.job(job.id), "batch_key", "k")
        store.redis.zadd(store.keys.batch("k"), {job.id: job.created_at})
        return store.get_job(job.id)

    leader, companion, cancelled, deleted, deferred = (
        batched(),
        batched(),
        queued_job(store),
        queued_job(store),
        queued_job(store),
    )
    assert agrees()
    running = store.claim(leader.id, 1, "w", heartbeat_ttl_s=5)
    assert [job.id for job in store.claim_batch(running, 4, "w", heartbeat_ttl_s=5)] == [companion.id]
    store.cancel(cancelled.id)
    store.delete_job(deleted.id)
    store.claim(deferred.id, 1, "w", heartbeat_ttl_s=5, max_running=0, defer_s=30)  # due 30 s from now
    assert agrees() and store.redis.zcard(store.keys.queued_due) == 1
    store.redis.delete(store.keys.heartbeat(leader.id, 1))  # its worker was lost
    assert store.requeue_lost(store.get_job(leader.id), max_attempts=3).status is JobStatus.QUEUED
    assert agrees() and store.redis.zcard(store.keys.queued_due) == 2


def test_queued_jobs_stored_before_the_due_index_are_indexed_and_sent_again(
    store: RecordStore, janitor: Janitor, settings: Settings
) -> None:
    lost = queued_job(store, age_s=RESEND_AFTER_S + 1)
    store.redis.delete(store.keys.queued_due)  # as a store written by an earlier version left it
    assert store.overdue_queued_jobs(time.time()) == []
    janitor.resend_lost_messages()
    assert store.get_job(lost.id).dispatch == 2
    assert store.waiting_task_ids(settings.queue) == {task_id(lost.id, 2)}


def test_job_directories_without_a_record_are_swept_once_old(store: RecordStore, janitor: Janitor) -> None:
    artifacts = janitor.artifacts
    kept = queued_job(store)
    directories = {name: artifacts.job_dir(name) for name in (kept.id, "orphan-old", "orphan-new")}
    for directory in directories.values():
        directory.mkdir(parents=True)
        (directory / "result.npz").write_bytes(b"x" * 100)
    for name in (kept.id, "orphan-old"):
        old = time.time() - 61
        os.utime(directories[name], (old, old))
    janitor.delete_orphaned_files()
    assert {p.name for p in artifacts.job_dirs()} == {kept.id, "orphan-new"}


def test_a_tenant_at_its_running_limit_is_deferred_and_others_are_not(store: RecordStore) -> None:
    first, second, other = queued_job(store, tenant="a"), queued_job(store, tenant="a"), queued_job(store, tenant="b")
    assert store.claim(first.id, 1, "w1", 5, max_running=1, defer_s=3).status is JobStatus.RUNNING
    before = time.time()
    deferred = store.claim(second.id, 1, "w2", 5, max_running=1, defer_s=3)
    assert deferred.status is JobStatus.QUEUED and deferred.dispatch == 2 and deferred.attempts == 0
    assert deferred.sent_at >= before + 3  # due after the countdown: the janitor counts from there
    assert not store.redis.exists(store.keys.heartbeat(second.id, 1))
    assert store.claim(other.id, 1, "w2", 5, max_running=1, defer_s=3).status is JobStatus.RUNNING
    assert store.claim(second.id, 1, "w2", 5, max_running=1) is None  # the deferred delivery is stale
    store.finish(first.id, 1, JobStatus.SUCCEEDED)
    assert store.claim(second.id, 2, "w2", 5, max_running=1, defer_s=3).status is JobStatus.RUNNING
