"""The store's batch index and batch claims, on a real Redis (no worker, no HTTP): which queued jobs a
worker may take into one engine call, and that their own deliveries are then stale."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from recording_dispatcher import RecordingDispatcher

from service.core.artifacts import ArtifactStore
from service.core.batching import batch_key
from service.core.janitor import Janitor, JanitorPolicy
from service.core.records import Job, JobStatus
from service.core.store import RecordStore

pytestmark = pytest.mark.integration

OPTIONS = {"method": "auto", "random_seed": 0}


def _queue(store: RecordStore, tenant: str = "lab-a", model_id: str = "m", options: dict | None = None) -> Job:
    options = OPTIONS if options is None else options
    job = Job(
        id=uuid.uuid4().hex,
        model_id=model_id,
        status=JobStatus.QUEUED,
        n_initial_states=4,
        options=options,
        created_at=time.time(),
        tenant=tenant,
        batch_key=batch_key(tenant, model_id, options),
    )
    assert store.create_job(job)
    return job


def _lead(store: RecordStore, job: Job) -> Job:
    claimed = store.claim(job.id, job.dispatch, "w", heartbeat_ttl_s=5)
    assert claimed is not None and claimed.status is JobStatus.RUNNING
    return claimed


def test_the_key_separates_tenants_models_and_options_and_ignores_option_order() -> None:
    key = batch_key("lab-a", "m", {"method": "auto", "random_seed": 0})
    assert key == batch_key("lab-a", "m", {"random_seed": 0, "method": "auto"})
    assert len({key, batch_key("lab-b", "m", OPTIONS), batch_key("lab-a", "n", OPTIONS)}) == 3
    assert key != batch_key("lab-a", "m", {"method": "auto", "random_seed": 1})


def test_a_batch_takes_queued_jobs_of_its_key_oldest_first_and_their_deliveries_are_stale(store: RecordStore) -> None:
    leader, *same = [_queue(store) for _ in range(4)]
    other_tenant = _queue(store, tenant="lab-b")
    other_options = _queue(store, options={**OPTIONS, "random_seed": 1})

    running = _lead(store, leader)
    taken = store.claim_batch(running, 3, "w", heartbeat_ttl_s=5)

    assert [job.id for job in taken] == [job.id for job in same[:2]]
    for job in taken:
        record = store.get_job(job.id)
        assert record.status is JobStatus.RUNNING and record.attempts == 1 and record.batch_size == 3
        assert store.is_alive(record)
        assert store.claim(job.id, job.dispatch, "w2", heartbeat_ttl_s=5) is None  # its own message: a no-op
    assert store.get_job(leader.id).batch_size == 3
    for job in (same[2], other_tenant, other_options):
        assert store.get_job(job.id).status is JobStatus.QUEUED
    assert store.batch_depth(leader.batch_key) == 1
    assert store.claim_batch(running, 1, "w", heartbeat_ttl_s=5) == []  # FPF_BATCH_MAX_JOBS=1: batching off


def test_cancelled_deleted_and_claimed_jobs_leave_the_index_and_a_requeued_one_returns(
    store: RecordStore, tmp_path: Path
) -> None:
    jobs = [_queue(store) for _ in range(4)]
    store.cancel(jobs[1].id)
    store.delete_job(jobs[2].id)
    assert store.batch_depth(jobs[0].batch_key) == 2

    running = _lead(store, jobs[0])
    assert [job.id for job in store.claim_batch(running, 8, "w", heartbeat_ttl_s=5)] == [jobs[3].id]
    assert store.batch_depth(jobs[0].batch_key) == 0

    store.redis.delete(store.keys.heartbeat(jobs[3].id, jobs[3].dispatch))  # its worker died mid-batch
    dispatcher = RecordingDispatcher()
    Janitor(store, ArtifactStore(tmp_path), dispatcher, JanitorPolicy()).recover_lost_jobs()  # type: ignore[arg-type]
    requeued = store.get_job(jobs[3].id)
    assert requeued.status is JobStatus.QUEUED and requeued.batch_size is None
    assert dispatcher.sent == [(jobs[3].id, 2)]
    assert store.batch_depth(jobs[0].batch_key) == 1


def test_a_batch_stays_within_the_tenants_running_quota(store: RecordStore) -> None:
    leader, *_ = [_queue(store) for _ in range(5)]
    running = _lead(store, leader)
    taken = store.claim_batch(running, 8, "w", heartbeat_ttl_s=5, max_running=3)
    assert len(taken) == 2
    assert store.count_jobs("lab-a")[JobStatus.RUNNING] == 3


def test_two_workers_batching_at_once_never_take_the_same_job(store: RecordStore) -> None:
    jobs = [_queue(store) for _ in range(42)]
    leaders = [_lead(store, jobs[0]), _lead(store, jobs[1])]
    with ThreadPoolExecutor(2) as pool:
        batches = list(pool.map(lambda lead: store.claim_batch(lead, 21, "w", heartbeat_ttl_s=5), leaders))
    taken = [job.id for batch in batches for job in batch]
    assert sorted(taken) == sorted(job.id for job in jobs[2:])
