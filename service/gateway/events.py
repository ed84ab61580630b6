"""Following one job through the store's pub/sub notices: its server-sent event stream, and the
wait of a result request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from fastapi.concurrency import run_in_threadpool

from fpf_client.errors import JobNotFound
from service.core.records import Job
from service.core.store import RecordStore
from service.gateway.schemas import JobOut

#: A comment line is sent after this many quiet seconds, so proxies keep the stream open.
KEEPALIVE_S = 15.0


async def job_events(client: aioredis.Redis, store: RecordStore, job_id: str) -> AsyncIterator[str]:
    """``event: progress`` with the job each time it changes, then ``event: end`` at a final status.

    It subscribes before reading the job, so no change between the two is missed; a
    deleted job ends the stream with ``data: null``.
    """
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.events(job_id))
        last = None
        while True:
            job = await run_in_threadpool(store.get_job, job_id)
            if job is None:
                yield "event: end\ndata: null\n\n"
                return
            data = JobOut.of(job).model_dump_json()
            if data != last:
                yield f"event: progress\ndata: {data}\n\n"
                last = data
            if job.status.is_final:
                yield f"event: end\ndata: {data}\n\n"
                return
            notice = await pubsub.get_message(ignore_subscribe_messages=True, timeout=KEEPALIVE_S)
            if notice is None:
                yield ": keep-alive\n\n"


async def ended_job(client: aioredis.Redis, store: RecordStore, job: Job, wait_s: float) -> Job:
    """``job`` once it has ended, or as it stands after ``wait_s`` seconds; JobNotFound when it is
    deleted meanwhile. It subscribes before reading the job, so no change between the two is missed."""
    if job.status.is_final or wait_s <= 0:
        return job
    give_up = time.monotonic() + wait_s
    async with client.pubsub() as pubsub:
        await pubsub.subscribe(store.keys.events(job.id))
        while True:
            current = await run_in_threadpool(store.get_job, job.id)
            if current is None:
                raise JobNotFound(f"job {job.id} was deleted")
            left = give_up - time.monotonic()
            if current.status.is_final or left <= 0:
                return current
            await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
