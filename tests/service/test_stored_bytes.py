"""The stored-bytes counts the store keeps beside the records, on a real Redis: they follow the
records through creation, results, deletion and expiry, the quota refuses at the byte, and an
entry whose record went another way stops counting at the janitor's reconciliation."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from job_records import queued_job
from recording_dispatcher import RecordingDispatcher

from fpf_client.errors import QuotaExceeded
from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.records import Job, JobStatus, Model, ModelStatus
from service.core.store import RecordStore
from service.gateway.quotas import QuotaLimits, Quotas

pytestmark = pytest.mark.integration

TENANT = "lab"


def _job(store: RecordStore, arrays_bytes: int, tenant: str = TENANT) -> Job:
    return queued_job(store, tenant=tenant, stored_bytes=arrays_bytes)


def _model(store: RecordStore, size_bytes: int, tenant: str = TENANT) -> Model:
    model = Model(
        id=uuid.uuid4().hex, status=ModelStatus.READY, size_bytes=size_bytes, created_at=time.time(), tenant=tenant
    )
    assert store.create_model(model)
    return model


def _succeed(store: RecordStore, job: Job, result_bytes: int) -> None:
    assert store.claim(job.id, job.dispatch, "w", heartbeat_ttl_s=5) is not None
    assert store.finish(job.id, job.dispatch, JobStatus.SUCCEEDED, result_bytes=result_bytes) is not None


def _janitor(store: RecordStore, tmp_path: Path) -> Janitor:
    return Janitor(store, ArtifactStore(tmp_path), RecordingDispatcher(), JanitorPolicy())  # type: ignore[arg-type]


def test_stored_bytes_follow_models_jobs_and_results(store: RecordStore) -> None:
    model = _model(store, 1000)
    first, second = _job(store, 300), _job(store, 50)
    _job(store, 7, tenant="other")
    assert store.stored_bytes(TENANT) == 1350

    _succeed(store, first, result_bytes=200)
    assert store.stored_bytes(TENANT) == 1550
    assert store.finish(first.id, first.dispatch, JobStatus.FAILED, result_bytes=999) is None  # already final
    assert store.stored_bytes(TENANT) == 1550

    store.delete_job(first.id)  # its arrays and its result go together
    assert store.stored_bytes(TENANT) == 1050
    store.delete_job(first.id)  # deleting twice frees nothing more
    assert store.stored_bytes(TENANT) == 1050
    store.delete_model(model.id, TENANT)
    assert store.stored_bytes(TENANT) == 50
    store.delete_job(second.id)
    assert (store.stored_bytes(TENANT), store.stored_bytes("other")) == (0, 7)


def test_a_result_recorded_by_a_delivery_that_lost_the_job_does_not_count(store: RecordStore) -> None:
    job = _job(store, 100)
    running = store.claim(job.id, job.dispatch, "w", heartbeat_ttl_s=5)
    assert running is not None
    store.redis.delete(store.keys.heartbeat(job.id, job.dispatch))
    assert store.requeue_lost(running, max_attempts=3) is not None  # dispatch 2 now owns it
    assert store.finish(job.id, job.dispatch, JobStatus.SUCCEEDED, result_bytes=500) is None
    assert store.stored_bytes(TENANT) == 100


def test_the_quota_refuses_at_the_byte(store: RecordStore) -> None:
    _model(store, 1000)
    _succeed(store, _job(store, 300), result_bytes=200)
    quotas = Quotas(QuotaLimits(queued_jobs=10, stored_bytes=2000, retry_after_s=7), store)
    quotas.check_job(TENANT, 500)  # 1500 + 500 is the quota itself
    with pytest.raises(QuotaExceeded) as refused:
        quotas.check_job(TENANT, 501)
    assert (refused.value.extra["quota"], refused.value.extra["limit"]) == ("stored_bytes", 2000)
    assert refused.value.extra["retry_after_s"] == 7


def test_expired_jobs_free_their_bytes(store: RecordStore, tmp_path: Path) -> None:
    kept, expired = _job(store, 10), _job(store, 20)
    _succeed(store, expired, result_bytes=30)
    store.redis.zadd(store.keys.expiry, {expired.id: time.time() - 1})  # its result TTL has passed
    _janitor(store, tmp_path).delete_expired_jobs()
    assert store.get_job(expired.id) is None and store.get_job(kept.id) is not None
    assert store.stored_bytes(TENANT) == 10


def test_an_entry_whose_record_is_gone_stops_counting_at_the_reconciliation(store: RecordStore, tmp_path: Path) -> None:
    kept, lost = _job(store, 10), _job(store, 20)
    store.redis.delete(store.keys.job(lost.id))  # gone without the store's deletion (an old gateway, an operator)
    assert store.stored_bytes(TENANT) == 30
    _janitor(store, tmp_path).reconcile_stored_bytes()
    assert store.stored_bytes(TENANT) == 10
    assert store.redis.hkeys(store.keys.stored(TENANT)) == [store.keys.job(kept.id)]


def test_the_reconciliation_counts_model_records_without_an_entry_and_resets_a_drifted_total(
    store: RecordStore, tmp_path: Path
) -> None:
    model = _model(store, 1000, tenant="legacy")
    _job(store, 10, tenant="legacy")
    store.redis.hdel(store.keys.stored("legacy"), store.keys.model("legacy", model.id))  # as records written before
    store.redis.set(store.keys.stored_total("legacy"), 123_456)  # the counts existed, or a total gone astray
    _janitor(store, tmp_path).reconcile_stored_bytes()
    assert store.stored_bytes("legacy") == 1010
