"""The store tests' record store: on the test database, under a key prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from service_harness import REDIS_DB

from service.core.store import RecordStore


@pytest.fixture
def store() -> Iterator[RecordStore]:
    """A record store on the test database under a fresh prefix; its keys are deleted afterwards."""
    prefix = f"fpftest-store-{uuid.uuid4().hex[:8]}"
    job_store = RecordStore.from_url(f"redis://127.0.0.1:6379/{REDIS_DB}", prefix, result_ttl_s=60)
    yield job_store
    keys = list(job_store.redis.scan_iter(match=f"{prefix}*"))
    if keys:
        job_store.redis.delete(*keys)
    job_store.redis.close()
