"""The job store: job and model records in Redis, shared by the gateway and the workers.

Every status change is a compare-and-set (WATCH/MULTI) on the record, so the gateway
(cancel, reaper) and the workers (claim, progress, finish) never overwrite each other,
and a stale or duplicate task delivery can tell that the job is no longer its own.
Each change is announced on a per-job pub/sub channel for the event stream.

The bytes each tenant stores (its model files' sizes, its jobs' arrays and results) are kept
beside the records for the stored-bytes quota: a hash per tenant, one entry per record named by
the record's key, and the entries' total. An entry is written and dropped in the same transaction
as its record, and a result's bytes are added in the transaction that records the job's end, so
reading the total is one round trip whatever the number of jobs. :meth:`RecordStore.reconcile_stored`
(run by the janitor) heals what those transactions cannot see: it drops entries whose record went
another way and recomputes the total.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from fpf_client.errors import FpfError, TimeLimitExceeded
from service.core.records import DEFAULT_TENANT, Job, JobStatus, Model, ModelStatus, encode_field

log = logging.getLogger(__name__)

#: kombu's separator between a queue name and its priority step.
_PRIORITY_SEP = "\x06\x16"

#: Set a tenant's stored-bytes entry (KEYS: the stored hash, its total; ARGV: record key, bytes) and move
#: the total by the change, so that the total stays the sum of the entries.
_PUT_STORED = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCRBY', KEYS[2], tonumber(ARGV[2]) - old)
"""

#: Record the progress of running jobs, each only while its delivery owns it (KEYS: per job its record
#: and its events channel; ARGV: per job its dispatch and the progress as JSON). Returns per job
#: {owned, cancel_requested} as 0 or 1: one round trip for every job of a batch.
_REPORT_PROGRESS = """
local acks = {}
for i = 1, #KEYS / 2 do
  local record, channel = KEYS[2 * i - 1], KEYS[2 * i]
  local fields = redis.call('HMGET', record, 'status', 'dispatch', 'cancel_requested')
  local owned = fields[1] == 'running' and fields[2] == ARGV[2 * i - 1]
  if owned then
    redis.call('HSET', record, 'progress', ARGV[2 * i])
    redis.call('PUBLISH', channel, 'progress')
  end
  acks[i] = {owned and 1 or 0, fields[3] == '1' and 1 or 0}
end
return acks
"""

#: Remove a tenant's stored-bytes entry (same KEYS; ARGV: record key) and take it off the total.
_DROP_STORED = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DECRBY', KEYS[2], old)
end
return 0
"""

#: Bring a tenant's stored-bytes entries back in line with its records (KEYS: the stored hash, its
#: total, the tenant's model index; ARGV: the key prefix of the tenant's model records): drop the
#: entries whose record is gone, add those of model records that have none (their size is in the
#: record), and set the total to the sum. Returns how many entries were dropped.
_RECONCILE_STORED = """
local dropped = 0
local entries = redis.call('HKEYS', KEYS[1])
for _, record in ipairs(entries) do
  if redis.call('EXISTS', record) == 0 then
    redis.call('HDEL', KEYS[1], record)
    dropped = dropped + 1
  end
end
for _, id in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local size = redis.call('HGET', ARGV[1] .. id, 'size_bytes')
  if size then redis.call('HSETNX', KEYS[1], ARGV[1] .. id, size) end
end
local total = 0
for _, bytes in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(bytes) end
redis.call('SET', KEYS[2], total)
return dropped
"""

#: Upper bounds (seconds) of the job-duration histogram served on /metrics.
DURATION_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)


@dataclass(frozen=True)
class Keys:
    """Names of every Redis key fpf uses, all under one prefix."""

    prefix: str

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def jobs(self) -> str:
        """Sorted set of job ids by creation time."""
        return f"{self.prefix}:jobs"

    def jobs_in(self, status: JobStatus) -> str:
        """Set of the ids of the jobs in ``status``."""
        return f"{self.prefix}:jobs:{status.value}"

    def heartbeat(self, job_id: str, dispatch: int) -> str:
        return f"{self.prefix}:heartbeat:{job_id}:{dispatch}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:events:{job_id}"

    @property
    def expiry(self) -> str:
        """Sorted set of finished job ids by the time their results expire."""
        return f"{self.prefix}:expiry"

    @property
    def queued_due(self) -> str:
        """Sorted set of queued job ids by when their message was due (``sent_at``, else
        ``created_at``): the janitor reads only the overdue ones, however long the queue."""
        return f"{self.prefix}:jobs:queued-due"

    def tenant_jobs(self, tenant: str) -> str:
        """Sorted set of one tenant's job ids by creation time."""
        return f"{self.prefix}:tenant:{tenant}:jobs"

    def tenant_jobs_in(self, tenant: str, status: JobStatus) -> str:
        """Set of the ids of one tenant's jobs in ``status`` (for quotas)."""
        return f"{self.prefix}:tenant:{tenant}:jobs:{status.value}"

    def stored(self, tenant: str) -> str:
        """Hash of the bytes one tenant stores, by the key of the record (job or model) they belong to."""
        return f"{self.prefix}:tenant:{tenant}:stored"

    def stored_total(self, tenant: str) -> str:
        """The sum of the values of :meth:`stored`, kept in step with it (for the stored-bytes quota)."""
        return f"{self.prefix}:tenant:{tenant}:stored-bytes"

    @property
    def stored_tenants(self) -> str:
        """Set of the tenants that have a :meth:`stored` hash, for the janitor's reconciliation."""
        return f"{self.prefix}:stored-tenants"

    def batch(self, batch_key: str) -> str:
        """Sorted set of the queued job ids of one batch key, by creation time."""
        return f"{self.prefix}:batch:{batch_key}"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idempotency:{tenant}:{key}"

    def model(self, tenant: str, model_id: str) -> str:
        """A tenant's record of a model (each tenant has its own record of the same bytes)."""
        return f"{self.prefix}:model:{tenant}:{model_id}"

    def models(self, tenant: str) -> str:
        """Sorted set of one tenant's model ids by creation time."""
        return f"{self.prefix}:tenant:{tenant}:models"

    @property
    def all_models(self) -> str:
        """Sorted set of ``tenant:model_id`` of every model record, for admins."""
        return f"{self.prefix}:models"

    def model_holders(self, model_id: str) -> str:
        """Set of the tenants holding a record of the model file ``model_id``."""
        return f"{self.prefix}:model-holders:{model_id}"

    @property
    def durations(self) -> str:
        """Hash of job-duration histogram counters (bucket bounds, ``+Inf``, ``sum``)."""
        return f"{self.prefix}:metrics:job_duration"

    @property
    def workers(self) -> str:
        """Sorted set of live worker names by the time their presence expires."""
        return f"{self.prefix}:workers"

    @property
    def worker_devices(self) -> str:
        """Hash of worker name to the JSON list of the devices it offers."""
        return f"{self.prefix}:worker-devices"

    @property
    def broker(self) -> str:
        """The global key prefix given to the Celery broker."""
        return f"{self.prefix}:broker:"


@dataclass(frozen=True)
class JobEnd:
    """A delivery's outcome of one job, for :meth:`RecordStore.finish_all`: the final status, the fields
    recorded with it, and the bytes of the result file it stored."""

    job_id: str
    dispatch: int
    status: JobStatus
    changes: dict[str, Any] = field(default_factory=dict)
    result_bytes: int = 0


@dataclass(frozen=True)
class ProgressAck:
    """What a running task learns when it reports progress."""

    owned: bool
    cancel_requested: bool


class RecordStore:
    """Job and model records over a Redis connection.

    Parameters
    ----------
    client : redis.Redis
        A client created with ``decode_responses=True``.
    prefix : str
        Prefix of every key, so that several deployments (or test sessions) share one Redis.
    result_ttl_s : float
        Finished jobs are scheduled for deletion this long after they finish.
    """

    def __init__(self, client: redis.Redis, prefix: str, *, result_ttl_s: float) -> None:
        self.redis = client
        self.keys = Keys(prefix)
        self.result_ttl_s = result_ttl_s
        self._put_stored = client.register_script(_PUT_STORED)
        self._drop_stored = client.register_script(_DROP_STORED)
        self._reconcile_stored = client.register_script(_RECONCILE_STORED)
        self._report_progress = client.register_script(_REPORT_PROGRESS)

    @classmethod
    def from_url(cls, url: str, prefix: str, *, result_ttl_s: float) -> RecordStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), prefix, result_ttl_s=result_ttl_s)

    def ping(self) -> bool:
        return bool(self.redis.ping())

    # --- models ----------------------------------------------------------------------
    def create_model(self, model: Model) -> bool:
        """Store a tenant's new model record; False (and nothing written) when that tenant has it."""
        key = self.keys.model(model.tenant, model.id)

        def apply(pipe: redis.client.Pipeline) -> bool:
            if pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, mapping=model.to_fields())
            pipe.zadd(self.keys.models(model.tenant), {model.id: model.created_at})
            pipe.zadd(self.keys.all_models, {f"{model.tenant}:{model.id}": model.created_at})
            pipe.sadd(self.keys.model_holders(model.id), model.tenant)
            self._put_stored_in(pipe, model.tenant, key, model.size_bytes)
            return True

        return cast("bool", self.redis.transaction(apply, key, value_from_callable=True))

    def get_model(self, model_id: str, tenant: str) -> Model | None:
        """``tenant``'s record of a model."""
        raw = self.redis.hgetall(self.keys.model(tenant, model_id))
        return Model.from_fields(raw) if raw else None

    def model_tenants(self, model_id: str) -> list[str]:
        """The tenants holding a record of the model file ``model_id``, sorted."""
        return sorted(self.redis.smembers(self.keys.model_holders(model_id)))

    def list_models(self, tenant: str | None) -> list[Model]:
        """A tenant's models (every tenant's for None), newest first."""
        if tenant is None:
            refs = [ref.split(":", 1) for ref in self.redis.zrevrange(self.keys.all_models, 0, -1)]
        else:
            refs = [(tenant, i) for i in self.redis.zrevrange(self.keys.models(tenant), 0, -1)]
        return [m for m in (self.get_model(i, t) for t, i in refs) if m is not None]

    def update_model(self, model_id: str, tenant: str, expect: Iterable[ModelStatus], **changes: Any) -> bool:
        """Change ``tenant``'s model whose status is in ``expect``; False when it is not (or is gone)."""
        allowed = {s.value for s in expect}
        key = self.keys.model(tenant, model_id)

        def apply(pipe: redis.client.Pipeline) -> bool:
            if pipe.hget(key, "status") not in allowed:
                return False
            pipe.multi()
            _write_fields(pipe, key, changes)
            return True

        return cast("bool", self.redis.transaction(apply, key, value_from_callable=True))

    def delete_model(self, model_id: str, tenant: str) -> tuple[bool, int]:
        """Remove ``tenant``'s record; (whether it existed, how many tenants still hold the file)."""
        pipe = self.redis.pipeline()
        pipe.delete(self.keys.model(tenant, model_id))
        pipe.zrem(self.keys.models(tenant), model_id)
        pipe.zrem(self.keys.all_models, f"{tenant}:{model_id}")
        pipe.srem(self.keys.model_holders(model_id), tenant)
        self._drop_stored(keys=self._stored_keys(tenant), args=[self.keys.model(tenant, model_id)], client=pipe)
        pipe.scard(self.keys.model_holders(model_id))
        results = pipe.execute()
        return bool(results[0]), int(results[-1])

    # --- jobs: creation and reading ---------------------------------------------------
    def create_job(self, job: Job, stored_bytes: int = 0) -> bool:
        """Store a new job record (and index it by status) whose arrays file takes ``stored_bytes``;
        False when the id exists."""
        key = self.keys.job(job.id)

        def apply(pipe: redis.client.Pipeline) -> bool:
            if pipe.exists(key):
                return False
            pipe.multi()
            pipe.hset(key, mapping=job.to_fields())
            pipe.zadd(self.keys.jobs, {job.id: job.created_at})
            pipe.zadd(self.keys.tenant_jobs(job.tenant), {job.id: job.created_at})
            pipe.sadd(self.keys.jobs_in(job.status), job.id)
            pipe.sadd(self.keys.tenant_jobs_in(job.tenant, job.status), job.id)
            if job.status is JobStatus.QUEUED:
                pipe.zadd(self.keys.queued_due, {job.id: job.sent_at or job.created_at})
            if job.status is JobStatus.QUEUED and job.batch_key is not None:
                pipe.zadd(self.keys.batch(job.batch_key), {job.id: job.created_at})
            self._put_stored_in(pipe, job.tenant, key, stored_bytes)
            return True

        return cast("bool", self.redis.transaction(apply, key, value_from_callable=True))

    def get_job(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self.keys.job(job_id))
        return Job.from_fields(raw) if raw else None

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100, *, tenant: str | None = None) -> list[Job]:
        """A tenant's jobs (every tenant's for None) newest first, optionally only those in ``status``."""
        if status is None:
            index = self.keys.jobs if tenant is None else self.keys.tenant_jobs(tenant)
            ids = self.redis.zrevrange(index, 0, limit - 1)
        else:
            index = self.keys.jobs_in(status) if tenant is None else self.keys.tenant_jobs_in(tenant, status)
            ids = list(self.redis.smembers(index))
        jobs = [j for j in (self.get_job(i) for i in ids) if j is not None]
        jobs.sort(key=lambda j: j.created_at, reverse=True)
        return jobs[:limit]

    def count_jobs(self, tenant: str | None = None) -> dict[JobStatus, int]:
        """Jobs by status, of one tenant or (None) of all."""
        pipe = self.redis.pipeline()
        for status in JobStatus:
            pipe.scard(self.keys.jobs_in(status) if tenant is None else self.keys.tenant_jobs_in(tenant, status))
        return dict(zip(JobStatus, pipe.execute()))

    def stored_bytes(self, tenant: str) -> int:
        """The bytes ``tenant`` stores (models, jobs' arrays and results), as the records count them."""
        return int(self.redis.get(self.keys.stored_total(tenant)) or 0)

    def stored_tenants(self) -> set[str]:
        """The tenants whose stored bytes :meth:`reconcile_stored` looks at: every one with a count or a model."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.smembers(self.keys.stored_tenants)
        pipe.zrange(self.keys.all_models, 0, -1)
        counted, models = pipe.execute()
        return set(counted) | {ref.split(":", 1)[0] for ref in models}

    def reconcile_stored(self, tenant: str) -> int:
        """Drop ``tenant``'s stored-bytes entries whose record is gone, count model records that have no
        entry, and set the total to the entries' sum, atomically; how many entries were dropped."""
        keys = [*self._stored_keys(tenant), self.keys.models(tenant)]
        return int(self._reconcile_stored(keys=keys, args=[self.keys.model(tenant, "")]))

    def running_job_ids(self) -> list[str]:
        return list(self.redis.smembers(self.keys.jobs_in(JobStatus.RUNNING)))

    def delete_job(self, job_id: str) -> None:
        """Remove the record and its index entries (files are the artifact store's)."""
        tenant, key = self.redis.hmget(self.keys.job(job_id), "tenant", "batch_key")
        tenant = tenant or DEFAULT_TENANT
        pipe = self.redis.pipeline()
        if key is not None:
            pipe.zrem(self.keys.batch(key), job_id)
        pipe.delete(self.keys.job(job_id))
        pipe.zrem(self.keys.jobs, job_id)
        pipe.zrem(self.keys.tenant_jobs(tenant), job_id)
        pipe.zrem(self.keys.expiry, job_id)
        pipe.zrem(self.keys.queued_due, job_id)
        for status in JobStatus:
            pipe.srem(self.keys.jobs_in(status), job_id)
            pipe.srem(self.keys.tenant_jobs_in(tenant, status), job_id)
        self._drop_stored(keys=self._stored_keys(tenant), args=[self.keys.job(job_id)], client=pipe)
        pipe.publish(self.keys.events(job_id), "deleted")
        pipe.execute()

    # --- jobs: the state machine --------------------------------------------------------
    def claim(
        self,
        job_id: str,
        dispatch: int,
        worker: str,
        heartbeat_ttl_s: float,
        *,
        max_running: int | None = None,
        defer_s: float = 0.0,
    ) -> Job | None:
        """queued -> running for the delivery ``dispatch``; None when the message is stale.

        With ``max_running``, a job whose tenant already runs that many is deferred instead: it
        stays queued under the next dispatch number, due ``defer_s`` from now, and the job is
        returned with status queued (the caller sends that dispatch with a countdown). The count
        and the claim are one transaction, so two workers never pass the limit together.
        """
        now = time.time()
        tenant = self.redis.hget(self.keys.job(job_id), "tenant") or DEFAULT_TENANT
        running = self.keys.tenant_jobs_in(tenant, JobStatus.RUNNING)

        def changes(job: Job) -> dict[str, Any]:
            if max_running is not None and self.redis.scard(running) >= max_running:
                return {"dispatch": job.dispatch + 1, "sent_at": now + defer_s}
            return {
                "status": JobStatus.RUNNING,
                "started_at": now,
                "attempts": job.attempts + 1,
                "worker": worker,
                "progress": None,
                "batch_size": 1,
            }

        return self._transition(
            job_id,
            lambda job: job.status is JobStatus.QUEUED and job.dispatch == dispatch and not job.cancel_requested,
            changes,
            heartbeat=(dispatch, heartbeat_ttl_s),
            watch=(running,),
        )

    def claim_batch(
        self, leader: Job, max_jobs: int, worker: str, heartbeat_ttl_s: float, *, max_running: int | None = None
    ) -> list[Job]:
        """Claim up to ``max_jobs - 1`` queued jobs of the running ``leader``'s batch key for one engine call.

        Each goes queued -> running under its current dispatch, as :meth:`claim` would take it (not
        cancelled; within the tenant's ``max_running``), so its own queue message is stale when it
        arrives; it starts when the leader did. One transaction over the batch's index, the jobs and
        the tenant's running set; each claimed job and the leader record the batch's size. The claimed
        jobs, oldest first.
        """
        if leader.batch_key is None or max_jobs <= 1:
            return []
        started_at = leader.started_at or time.time()  # the batch's attempt starts with its leader's
        index = self.keys.batch(leader.batch_key)
        running = self.keys.tenant_jobs_in(leader.tenant, JobStatus.RUNNING)

        def apply(pipe: redis.client.Pipeline) -> list[Job]:
            ids = pipe.zrange(index, 0, max_jobs - 2)
            if not ids:
                return []
            pipe.watch(*(self.keys.job(i) for i in ids))
            reads = self.redis.pipeline(transaction=False)  # after the WATCH: a change fails the MULTI
            for job_id in ids:
                reads.hgetall(self.keys.job(job_id))
            room = len(ids) if max_running is None else max(0, max_running - int(pipe.scard(running)))
            taken = [
                job
                for job in (Job.from_fields(raw) for raw in reads.execute() if raw)
                if job.status is JobStatus.QUEUED and not job.cancel_requested and job.batch_key == leader.batch_key
            ][:room]
            if not taken:
                return []
            size = len(taken) + 1
            pipe.multi()
            pipe.hset(self.keys.job(leader.id), "batch_size", str(size))
            for job in taken:
                update = {
                    "status": JobStatus.RUNNING,
                    "started_at": started_at,
                    "attempts": job.attempts + 1,
                    "worker": worker,
                    "progress": None,
                    "batch_size": size,
                }
                _write_fields(pipe, self.keys.job(job.id), update)
                pipe.zrem(index, job.id)
                pipe.zrem(self.keys.queued_due, job.id)
                pipe.smove(self.keys.jobs_in(JobStatus.QUEUED), self.keys.jobs_in(JobStatus.RUNNING), job.id)
                pipe.smove(self.keys.tenant_jobs_in(job.tenant, JobStatus.QUEUED), running, job.id)
                pipe.set(self.keys.heartbeat(job.id, job.dispatch), "1", px=int(heartbeat_ttl_s * 1000))
                pipe.publish(self.keys.events(job.id), "status")
                for name, value in update.items():
                    setattr(job, name, value)
            leader.batch_size = size
            return taken

        return cast("list[Job]", self.redis.transaction(apply, index, running, value_from_callable=True))

    def batch_depth(self, batch_key: str) -> int:
        """How many queued jobs have ``batch_key``."""
        return int(self.redis.zcard(self.keys.batch(batch_key)))

    def beat_all(self, deliveries: Iterable[tuple[str, int]], ttl_s: float) -> None:
        """Refresh the heartbeats of several running deliveries (a batch) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, dispatch in deliveries:
            pipe.set(self.keys.heartbeat(job_id, dispatch), "1", px=int(ttl_s * 1000))
        pipe.execute()

    def is_alive(self, job: Job) -> bool:
        return bool(self.redis.exists(self.keys.heartbeat(job.id, job.dispatch)))

    def report_progress(self, job_id: str, dispatch: int, progress: dict[str, Any]) -> ProgressAck:
        """Record progress of the running delivery ``dispatch`` and tell it whether to go on."""
        return self.report_progress_of([(job_id, dispatch, progress)])[0]

    def report_progress_of(self, reports: Sequence[tuple[str, int, dict[str, Any]]]) -> list[ProgressAck]:
        """Record each ``(job_id, dispatch, progress)`` of the jobs of a batch, in one round trip; per job
        whether its delivery still owns it and whether it was asked to stop."""
        keys = [key for job_id, _, _ in reports for key in (self.keys.job(job_id), self.keys.events(job_id))]
        args = [arg for _, dispatch, progress in reports for arg in (dispatch, json.dumps(progress))]
        acks = self._report_progress(keys=keys, args=args) if reports else []
        return [ProgressAck(owned=owned == 1, cancel_requested=cancel == 1) for owned, cancel in acks]

    def finish(
        self, job_id: str, dispatch: int, status: JobStatus, *, result_bytes: int = 0, **changes: Any
    ) -> Job | None:
        """running -> a final status, for the delivery that owns the job; None otherwise. In the same
        transaction the job's stored bytes grow by ``result_bytes`` (its result file), and its
        duration is counted in the histogram of job durations."""
        return self.finish_all([JobEnd(job_id, dispatch, status, changes, result_bytes)])[0]

    def finish_all(self, ends: Sequence[JobEnd]) -> list[Job | None]:
        """:meth:`finish` for each of ``ends`` (the jobs of a batch), in one transaction; per end the
        finished job, or None where its delivery does not own the job."""
        if not ends:
            return []
        now = time.time()
        keys = [self.keys.job(end.job_id) for end in ends]

        def apply(pipe: redis.client.Pipeline) -> list[Job | None]:
            reads = self.redis.pipeline(transaction=False)  # after the WATCH: a change fails the MULTI
            for key in keys:
                reads.hgetall(key)
            owned = [
                job if job is not None and job.status is JobStatus.RUNNING and job.dispatch == end.dispatch else None
                for job, end in zip((Job.from_fields(raw) if raw else None for raw in reads.execute()), ends)
            ]
            if any(job is not None for job in owned):
                pipe.multi()
            for job, end in zip(owned, ends, strict=True):
                if job is not None:
                    update = {"status": end.status, "finished_at": now, **end.changes}
                    self._write_transition(pipe, job, update, stored_bytes=end.result_bytes, count_duration=True)
            return owned

        return cast("list[Job | None]", self.redis.transaction(apply, *keys, value_from_callable=True))

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once, or ask a running one to stop; None when there is no such job."""
        now = time.time()

        def changes(job: Job) -> dict[str, Any]:
            if job.status is JobStatus.QUEUED:
                return {"status": JobStatus.CANCELLED, "finished_at": now, "cancel_requested": True}
            return {"cancel_requested": True}

        self._transition(job_id, lambda job: not job.status.is_final and not job.cancel_requested, changes)
        return self.get_job(job_id)

    def requeue_lost(
        self, job: Job, max_attempts: int, hard_time_limit_s: float = float("inf"), start_allowance_s: float = 0.0
    ) -> Job | None:
        """Settle a running job whose heartbeat expired: re-queue it with a new dispatch number,
        or end it (cancelled when asked to, failed when its run had passed ``hard_time_limit_s`` plus
        the ``start_allowance_s`` of its sandbox, which would happen again, or after ``max_attempts``).
        None when it changed meanwhile."""
        now = time.time()

        def changes(current: Job) -> dict[str, Any]:
            if current.cancel_requested:
                return {"status": JobStatus.CANCELLED, "finished_at": now}
            if current.started_at is not None and now - current.started_at >= hard_time_limit_s + start_allowance_s:
                error = TimeLimitExceeded(
                    f"the run passed its time limit of {hard_time_limit_s:g} s and its "
                    f"worker ({current.worker}) was stopped",
                    limit=hard_time_limit_s,
                )
                return {"status": JobStatus.FAILED, "finished_at": now, "error": error.to_problem()}
            if current.attempts >= max_attempts:
                detail = (
                    f"the worker running this job was lost {current.attempts} times "
                    f"(max_attempts={max_attempts}); last on {current.worker}"
                )
                return {"status": JobStatus.FAILED, "finished_at": now, "error": FpfError(detail).to_problem()}
            return {
                "status": JobStatus.QUEUED,
                "dispatch": current.dispatch + 1,
                "progress": None,
                "started_at": None,
                "worker": None,
                "batch_size": None,
                "sent_at": now,
            }

        return self._transition(
            job.id,
            lambda current: (
                current.status is JobStatus.RUNNING and current.dispatch == job.dispatch and not self.is_alive(current)
            ),
            changes,
        )

    def resend(self, job: Job) -> Job | None:
        """A queued job under the next dispatch number, for a message that was lost; None when it changed."""
        now = time.time()
        return self._transition(
            job.id,
            lambda current: current.status is JobStatus.QUEUED and current.dispatch == job.dispatch,
            lambda current: {"dispatch": current.dispatch + 1, "sent_at": now},
        )

    def overdue_queued_jobs(self, due_before: float) -> list[Job]:
        """The queued jobs whose message was due before ``due_before`` (``time.time()`` seconds), found
        through their index: the cost follows the overdue jobs, not the queue's length."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in self.redis.zrangebyscore(self.keys.queued_due, "-inf", f"({due_before!r}"):
            pipe.hgetall(self.keys.job(job_id))
        jobs = (Job.from_fields(raw) for raw in pipe.execute() if raw)
        return [job for job in jobs if job.status is JobStatus.QUEUED]

    def index_queued_jobs(self) -> int:
        """Put the queued jobs that the due index lacks (records written before it existed) in it; how
        many were added."""
        indexed = set(self.redis.zrange(self.keys.queued_due, 0, -1))
        missing = [i for i in self.redis.smembers(self.keys.jobs_in(JobStatus.QUEUED)) if i not in indexed]
        pipe = self.redis.pipeline(transaction=False)
        for job_id in missing:
            pipe.hmget(self.keys.job(job_id), "sent_at", "created_at")
        due = {
            job_id: float(sent_at or created_at)
            for job_id, (sent_at, created_at) in zip(missing, pipe.execute(), strict=True)
            if sent_at or created_at
        }
        return int(self.redis.zadd(self.keys.queued_due, due, nx=True)) if due else 0

    def existing_job_ids(self, job_ids: list[str]) -> set[str]:
        """Those of ``job_ids`` that have a record, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(self.keys.job(job_id))
        return {job_id for job_id, found in zip(job_ids, pipe.execute()) if found}

    def abandon(self, job_id: str, error: dict[str, Any]) -> Job | None:
        """queued -> failed, for a job that could not be handed to the queue."""
        now = time.time()
        return self._transition(
            job_id,
            lambda job: job.status is JobStatus.QUEUED,
            lambda job: {"status": JobStatus.FAILED, "finished_at": now, "error": error},
        )

    def expired_job_ids(self, now: float | None = None) -> list[str]:
        """Finished jobs whose results have outlived the TTL."""
        return list(self.redis.zrangebyscore(self.keys.expiry, "-inf", time.time() if now is None else now))

    # --- idempotency ---------------------------------------------------------------------
    def remember_idempotency(self, tenant: str, key: str, job_id: str, fingerprint: str) -> tuple[str, str]:
        """Bind ``tenant``'s ``key`` to (job_id, fingerprint) unless bound already; returns the binding in force."""
        name = self.keys.idempotency(tenant, key)
        value = json.dumps([job_id, fingerprint])
        if not self.redis.set(name, value, nx=True, px=int(self.result_ttl_s * 1000)):
            value = self.redis.get(name) or value
        bound_id, bound_fingerprint = json.loads(value)
        return bound_id, bound_fingerprint

    # --- workers ----------------------------------------------------------------------
    def announce_worker(self, name: str, devices: list[str], ttl_s: float) -> None:
        """Record that worker ``name`` is alive and offers ``devices``, for the next ``ttl_s`` seconds."""
        pipe = self.redis.pipeline()
        pipe.zadd(self.keys.workers, {name: time.time() + ttl_s})
        pipe.hset(self.keys.worker_devices, name, json.dumps(devices))
        pipe.execute()

    def withdraw_worker(self, name: str) -> None:
        """Forget worker ``name`` (it is shutting down)."""
        pipe = self.redis.pipeline()
        pipe.zrem(self.keys.workers, name)
        pipe.hdel(self.keys.worker_devices, name)
        pipe.execute()

    def live_worker_devices(self) -> dict[str, list[str]]:
        """The devices of every worker whose presence has not expired, by worker name."""
        now = time.time()
        expired = [str(name) for name in self.redis.zrangebyscore(self.keys.workers, "-inf", now)]
        if expired:
            pipe = self.redis.pipeline()
            pipe.zrem(self.keys.workers, *expired)
            pipe.hdel(self.keys.worker_devices, *expired)
            pipe.execute()
        names = [str(name) for name in self.redis.zrangebyscore(self.keys.workers, now, "+inf")]
        if not names:
            return {}
        devices = self.redis.hmget(self.keys.worker_devices, names)
        return {name: json.loads(found) for name, found in zip(names, devices, strict=True) if found}

    # --- metrics ----------------------------------------------------------------------
    def _count_duration(self, pipe: redis.client.Pipeline, seconds: float) -> None:
        """Count one finished job in the duration histogram (cumulative buckets), within ``pipe``."""
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(self.keys.durations, repr(float(bound)), 1)
        pipe.hincrby(self.keys.durations, "+Inf", 1)
        pipe.hincrbyfloat(self.keys.durations, "sum", seconds)

    def queue_depth(self, queue: str) -> int:
        """Messages waiting in a Celery queue (kombu keeps one Redis list per priority step)."""
        pipe = self.redis.pipeline()
        for name in self._queue_lists(queue):
            pipe.llen(self.keys.broker + name)
        return int(sum(pipe.execute()))

    @staticmethod
    def _queue_lists(queue: str) -> list[str]:
        """kombu's Redis lists of a queue: one per priority step."""
        return [queue] + [f"{queue}{_PRIORITY_SEP}{step}" for step in (3, 6, 9)]

    def waiting_task_ids(self, queue: str) -> set[str]:
        """Ids of the task messages waiting in a Celery queue (not those a worker has taken).

        kombu's Redis transport keeps each message as JSON with the Celery headers, ``id`` among them.
        """
        pipe = self.redis.pipeline()
        for name in self._queue_lists(queue):
            pipe.lrange(self.keys.broker + name, 0, -1)
        ids = set()
        for message in (m for messages in pipe.execute() for m in messages):
            try:
                ids.add(json.loads(message)["headers"]["id"])
            except (ValueError, KeyError, TypeError):
                continue
        return ids

    def durations(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.redis.hgetall(self.keys.durations).items()}

    # --- internals ----------------------------------------------------------------------
    def _transition(
        self,
        job_id: str,
        allowed: Callable[[Job], bool],
        changes: Callable[[Job], dict[str, Any]],
        *,
        heartbeat: tuple[int, float] | None = None,
        watch: tuple[str, ...] = (),
        stored_bytes: int = 0,
        count_duration: bool = False,
    ) -> Job | None:
        """Apply ``changes(job)`` when ``allowed(job)``, atomically (also against changes of the keys
        ``watch``, which ``changes`` may read); the new job, or None. ``heartbeat`` is set when the job
        starts running; ``stored_bytes`` are added to the job's stored bytes; with ``count_duration``
        a job that ends is counted in the duration histogram."""
        key = self.keys.job(job_id)

        def apply(pipe: redis.client.Pipeline) -> Job | None:
            raw = pipe.hgetall(key)
            if not raw:
                return None
            job = Job.from_fields(raw)
            if not allowed(job):
                return None
            update = changes(job)
            pipe.multi()
            self._write_transition(
                pipe, job, update, heartbeat=heartbeat, stored_bytes=stored_bytes, count_duration=count_duration
            )
            return job

        return cast("Job | None", self.redis.transaction(apply, key, *watch, value_from_callable=True))

    def _write_transition(
        self,
        pipe: redis.client.Pipeline,
        job: Job,
        update: dict[str, Any],
        *,
        heartbeat: tuple[int, float] | None = None,
        stored_bytes: int = 0,
        count_duration: bool = False,
    ) -> None:
        """Queue on ``pipe`` (in MULTI) the change of ``job`` by ``update`` with every index, set and
        counter that follows it (see :meth:`_transition`), then apply ``update`` to ``job``."""
        job_id, key = job.id, self.keys.job(job.id)
        _write_fields(pipe, key, update)
        new_status = update.get("status", job.status)
        if new_status is JobStatus.QUEUED:
            pipe.zadd(self.keys.queued_due, {job_id: update.get("sent_at", job.sent_at) or job.created_at})
        elif job.status is JobStatus.QUEUED:
            pipe.zrem(self.keys.queued_due, job_id)
        if new_status is not job.status and job.batch_key is not None:
            if job.status is JobStatus.QUEUED:
                pipe.zrem(self.keys.batch(job.batch_key), job_id)
            elif new_status is JobStatus.QUEUED:
                pipe.zadd(self.keys.batch(job.batch_key), {job_id: job.created_at})
        if new_status is not job.status:
            pipe.smove(self.keys.jobs_in(job.status), self.keys.jobs_in(new_status), job_id)
            pipe.smove(
                self.keys.tenant_jobs_in(job.tenant, job.status),
                self.keys.tenant_jobs_in(job.tenant, new_status),
                job_id,
            )
            if new_status.is_final:
                pipe.zadd(self.keys.expiry, {job_id: time.time() + self.result_ttl_s})
                pipe.delete(self.keys.heartbeat(job_id, job.dispatch))
                if count_duration:
                    self._count_duration(pipe, update["finished_at"] - job.created_at)
        if heartbeat is not None and new_status is JobStatus.RUNNING:
            dispatch, ttl_s = heartbeat
            pipe.set(self.keys.heartbeat(job_id, dispatch), "1", px=int(ttl_s * 1000))
        if stored_bytes:
            stored, total = self._stored_keys(job.tenant)
            pipe.hincrby(stored, key, stored_bytes)
            pipe.incrby(total, stored_bytes)
        pipe.publish(self.keys.events(job_id), "status")
        for name, value in update.items():
            setattr(job, name, value)

    def _stored_keys(self, tenant: str) -> list[str]:
        """The keys of a tenant's stored-bytes entries and their total."""
        return [self.keys.stored(tenant), self.keys.stored_total(tenant)]

    def _put_stored_in(self, pipe: redis.client.Pipeline, tenant: str, record: str, n_bytes: int) -> None:
        """Queue on ``pipe`` the setting of the stored bytes of ``record`` (a key) to ``n_bytes``."""
        self._put_stored(keys=self._stored_keys(tenant), args=[record, n_bytes], client=pipe)
        pipe.sadd(self.keys.stored_tenants, tenant)


def _write_fields(pipe: redis.client.Pipeline, key: str, changes: dict[str, Any]) -> None:
    present = {k: encode_field(k, v) for k, v in changes.items() if v is not None}
    absent = [k for k, v in changes.items() if v is None]
    if present:
        pipe.hset(key, mapping=present)
    if absent:
        pipe.hdel(key, *absent)
