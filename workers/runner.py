"""What a worker does with a job or a model: load, run the engine, report, store the outcome.

The Celery tasks (workers/tasks.py) are thin wrappers around :class:`JobRunner` and
:func:`validate_model`. Models load and run where :class:`Models` says: in a sandboxed
child (:class:`SandboxedModels`, the default) or, for trusted models only, in this process
(:class:`InProcessModels`). torch and the engine are imported on first use, never at import.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
import redis
from celery.exceptions import SoftTimeLimitExceeded

from fpf_client.errors import FpfError, InvalidModel, ModelNotFound, TimeLimitExceeded, ValidationTimeout
from fpf_client.options import FinderOptions
from service.core.artifacts import ArtifactStore
from service.core.queue import Dispatcher
from service.core.records import Job, JobStatus, Model, ModelStatus
from service.core.settings import Settings
from service.core.store import JobEnd, ProgressAck, RecordStore

from .heartbeat import Heartbeat
from .results import ResultFile
from .sandbox.process import RequestTimedOut

if TYPE_CHECKING:
    from workers.engine import StepModel
    from workers.sandbox import SandboxPool

log = logging.getLogger(__name__)

#: An engine outcome of one job: its fixed points (in-process) or its result file's bytes (a sandbox).
T = TypeVar("T")

#: Progress reports closer together than this are dropped (the engine may report every few iterations).
PROGRESS_MIN_INTERVAL_S = 0.1
#: Without progress reports, whether a job is still wanted (not cancelled) is looked up this often.
IDLE_CHECK_S = 1.0
#: Validations of one upload that may run past the validation time limit before the model is invalid:
#: one more than one, so that a run slowed down by a busy machine does not condemn a model.
VALIDATION_ATTEMPTS = 2


class StopJob(Exception):
    """Raised from the progress callback to stop the engine: cancelled, deleted or taken over."""


class StoreUnavailable(Exception):
    """Redis failed while a job ran: an infrastructure fault, not the job's. The run is given up
    unrecorded; its heartbeat expires and the gateway's janitor queues the job again."""


@dataclass(frozen=True)
class RunLimits:
    """What one run of a job may take, in wall time counted from the moment its model's process is
    ready (a sandbox's start is not the job's time), and in result size."""

    soft_s: float  #: the engine stops searching and returns a partial result
    hard_s: float  #: the run fails with time_limit_exceeded
    max_result_bytes: int


class ProgressReporter:
    """Follows a running job: writes its progress to the store, stops it when it is no longer wanted."""

    def __init__(self, store: RecordStore, job_id: str, dispatch: int) -> None:
        self.store = store
        self.job_id = job_id
        self.dispatch = dispatch
        self._last_report = 0.0
        self._last_check = time.monotonic()
        self._store_down_since: float | None = None

    def progress(self, report: dict[str, Any]) -> None:
        """The engine's progress callback. A report Redis cannot take is skipped and the search goes
        on: progress is advisory, and the engine must not fail for the store's outage."""
        if not self.due():
            return
        try:
            ack = self.store.report_progress(self.job_id, self.dispatch, _plain(report))
        except redis.RedisError as exc:
            self.store_failed(exc)
            return
        self.acknowledged(ack)

    def due(self) -> bool:
        """Whether a report now is to be written (at most one each ``PROGRESS_MIN_INTERVAL_S``); a
        True counts as the report."""
        now = time.monotonic()
        if now - self._last_report < PROGRESS_MIN_INTERVAL_S:
            return False
        self._last_report = self._last_check = now
        return True

    def acknowledged(self, ack: ProgressAck) -> None:
        """The store took a report: raise :class:`StopJob` when the job is no longer wanted."""
        self._store_back()
        self._stop_unless(ack.owned, ack.cancel_requested)

    def idle(self) -> None:
        """Called while the engine is busy without reports (loading, a long phase): still wanted?"""
        now = time.monotonic()
        if now - self._last_check < IDLE_CHECK_S:
            return
        self._last_check = now
        try:
            job = self.store.get_job(self.job_id)
        except redis.RedisError as exc:
            self.store_failed(exc)
            return
        self._store_back()
        owned = job is not None and job.status is JobStatus.RUNNING and job.dispatch == self.dispatch
        self._stop_unless(owned, job is not None and job.cancel_requested)

    def store_failed(self, exc: redis.RedisError) -> None:
        """Redis could not take a report or answer a check: logged once per outage, the search goes on."""
        if self._store_down_since is None:
            self._store_down_since = time.monotonic()
            log.warning(
                "job %s: Redis is unavailable (%s: %s); progress is not recorded, the search goes on",
                self.job_id,
                type(exc).__name__,
                exc,
            )

    def _store_back(self) -> None:
        if self._store_down_since is not None:
            log.info(
                "job %s: Redis is back after %.1f s; progress recorded again",
                self.job_id,
                time.monotonic() - self._store_down_since,
            )
            self._store_down_since = None

    @staticmethod
    def _stop_unless(owned: bool, cancel_requested: bool) -> None:
        if cancel_requested:
            raise StopJob("cancelled on request")
        if not owned:
            raise StopJob("the job was deleted or handed to another worker")


class BatchReporter:
    """Follows the jobs of one engine call: routes each progress report to its job, settles a job that
    is no longer wanted at once (``settle``), and stops the engine when none of them is.

    A report of the whole batch reaches each job in the job's own terms: ``n_total`` its own initial
    states, ``n_converged`` the batch's converged fraction of them.
    """

    def __init__(
        self,
        store: RecordStore,
        reporters: Sequence[ProgressReporter],
        sizes: Sequence[int],
        settle: Callable[[int, StopJob], None],
    ) -> None:
        self.store = store
        self.reporters = reporters
        self.sizes = sizes
        self.settle = settle
        #: The jobs (their indices in the batch) that have stopped, and why.
        self.stopped: dict[int, StopJob] = {}

    def progress(self, report: dict[str, Any], job: int | None) -> None:
        """A report of job ``job`` of the batch, or of all of them (None: written to every job in one
        round trip)."""
        if job is not None or len(self.reporters) == 1:
            self._follow(job or 0, lambda reporter: reporter.progress(report))
        else:
            self._report_to_all(report)
        self._go_on()

    def _report_to_all(self, report: dict[str, Any]) -> None:
        due = [i for i, reporter in enumerate(self.reporters) if i not in self.stopped and reporter.due()]
        if not due:
            return
        shares = [(self.reporters[i], _plain(_share(report, self.sizes[i]))) for i in due]
        try:
            acks = self.store.report_progress_of([(r.job_id, r.dispatch, share) for r, share in shares])
        except redis.RedisError as exc:
            for reporter, _ in shares:
                reporter.store_failed(exc)
            return
        for index, ack in zip(due, acks, strict=True):
            self._follow(index, lambda reporter, ack=ack: reporter.acknowledged(ack))

    def idle(self) -> None:
        for index in range(len(self.reporters)):
            self._follow(index, ProgressReporter.idle)
        self._go_on()

    def _follow(self, index: int, call: Callable[[ProgressReporter], None]) -> None:
        if index in self.stopped:
            return
        try:
            call(self.reporters[index])
        except StopJob as stop:
            self.stopped[index] = stop
            self.settle(index, stop)

    def _go_on(self) -> None:
        if len(self.stopped) == len(self.reporters):
            raise StopJob("no job of the batch is still wanted")


class Models(Protocol):
    """Where models are loaded and the engine runs: a sandbox, or (trusted models only) in-process."""

    def describe(self, record: Model, path: Path, time_limit_s: float) -> dict[str, Any]:
        """Load the model file at ``path`` for its record's tenant; its format, shapes and dynamics.
        Past ``time_limit_s`` it raises :class:`RequestTimedOut` where it can stop the load itself."""

    def solve(
        self,
        record: Model,
        path: Path,
        arrays_paths: Sequence[Path],
        options: FinderOptions,
        reporter: BatchReporter,
        limits: RunLimits,
    ) -> tuple[list[ResultFile | FpfError], float]:
        """Find the fixed points of a batch of jobs of the record's tenant (their arrays files) in one
        engine call within ``limits``; per job its result file or the error that ended it alone, and
        the engine's seconds."""


class SandboxedModels:
    """Models load and run in a bubblewrap child that serves one tenant at a time (workers/sandbox)."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def describe(self, record: Model, path: Path, time_limit_s: float) -> dict[str, Any]:
        return self.pool.get(record.tenant).describe(_wire(record), path.read_bytes, time_limit_s=time_limit_s)

    def solve(
        self,
        record: Model,
        path: Path,
        arrays_paths: Sequence[Path],
        options: FinderOptions,
        reporter: BatchReporter,
        limits: RunLimits,
    ) -> tuple[list[ResultFile | FpfError], float]:
        from .sandbox import BatchJob, Deadline

        sandbox = self.pool.get(record.tenant)
        sandbox.wait_ready()  # the limits count from here, as a validation's do
        outcomes, engine_s = sandbox.solve_batch(
            _wire(record),
            path.read_bytes,
            [BatchJob(arrays.read_bytes(), limits.max_result_bytes) for arrays in arrays_paths],
            options.model_dump(mode="json"),
            Deadline(limits.hard_s, reporter),
            limits={"time_limit_s": limits.soft_s},
        )
        # the sandbox runs untrusted code: its result files are checked before they are stored
        return [_result_file(o, ResultFile.verified, limits.max_result_bytes) for o in outcomes], engine_s


class InProcessModels:
    """``FPF_SANDBOX=off``: StepModels loaded in the worker process itself, cached by tenant and model id.

    Ids are content hashes, so an entry never goes stale; the tenant is part of the key
    because each tenant's record carries its own format hints.
    """

    def __init__(self, size: int = 4) -> None:
        self.size = size
        self._models: OrderedDict[tuple[str, str], StepModel] = OrderedDict()

    def describe(self, record: Model, path: Path, time_limit_s: float) -> dict[str, Any]:
        # A load in this process cannot be stopped from here: the validation task's Celery time
        # limits (workers/tasks.py) raise SoftTimeLimitExceeded, or replace the pool process.
        return self._get(record, path).describe()

    def solve(
        self,
        record: Model,
        path: Path,
        arrays_paths: Sequence[Path],
        options: FinderOptions,
        reporter: BatchReporter,
        limits: RunLimits,
    ) -> tuple[list[ResultFile | FpfError], float]:
        from .solving import JobArrays, solve_jobs

        model = self._get(record, path)
        jobs = [JobArrays.load(arrays) for arrays in arrays_paths]
        # Here Celery's soft time limit of the task (service/core/queue.py) is the hard limit.
        outcomes, engine_s = solve_jobs(model, jobs, options, reporter.progress, time_limit_s=limits.soft_s)
        return [_result_file(o, ResultFile.of, limits.max_result_bytes) for o in outcomes], engine_s

    def _get(self, record: Model, path: Path) -> StepModel:
        from workers.engine import load_model

        key = (record.tenant, record.id)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        model = load_model(path, **_load_arguments(record))
        self._models[key] = model
        if len(self._models) > self.size:
            self._models.popitem(last=False)
        return model


class JobRunner:
    """Run one delivery of a job, from claim to stored result."""

    def __init__(
        self, store: RecordStore, artifacts: ArtifactStore, settings: Settings, models: Models, dispatcher: Dispatcher
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.models = models
        self.dispatcher = dispatcher
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job_id: str, dispatch: int) -> None:
        """Claim delivery ``dispatch`` (skip it when stale, defer it while its tenant is at its
        running-jobs quota) and queued jobs of its batch key, solve them in one engine call, store
        each result and record each end."""
        job = self.store.claim(
            job_id,
            dispatch,
            self.worker,
            self.settings.heartbeat_ttl_s,
            max_running=self.settings.quota_running_jobs,
            defer_s=self.settings.running_quota_retry_s,
        )
        if job is None:
            log.info("job %s: delivery %d is stale, cancelled or taken in a batch; skipped", job_id, dispatch)
            return
        if job.status is JobStatus.QUEUED:
            log.info(
                "job %s: tenant %s runs its quota of %s jobs; tried again in %g s (dispatch %d)",
                job_id,
                job.tenant,
                self.settings.quota_running_jobs,
                self.settings.running_quota_retry_s,
                job.dispatch,
            )
            self.dispatcher.run_job(job_id, job.dispatch, countdown_s=self.settings.running_quota_retry_s)
            return
        record = self.store.get_model(job.model_id, job.tenant)  # one read serves batching and the solve
        jobs = [job, *self._companions(job, record)]
        if len(jobs) > 1:
            self._discard_deliveries(jobs[1:])
        limits = RunLimits(
            soft_s=self.settings.soft_time_limit_s,
            hard_s=self.settings.hard_time_limit_s,
            max_result_bytes=self.settings.max_result_bytes,
        )
        for member in jobs:
            log.info(
                "job %s: attempt %d started on %s%s",
                member.id,
                member.attempts,
                self.worker,
                "" if len(jobs) == 1 else f" in a batch of {len(jobs)} led by job {job.id}",
            )
        heartbeat = Heartbeat(
            self.store,
            [(member.id, member.dispatch) for member in jobs],
            interval_s=self.settings.heartbeat_interval_s,
            ttl_s=self.settings.heartbeat_ttl_s,
        )
        try:
            with heartbeat:
                self._end([end for end in self._execute(jobs, record, limits, heartbeat) if end is not None])
        except StoreUnavailable as exc:
            log.warning(
                "jobs %s: %s; the attempt is given up unrecorded, and each job runs again once its heartbeat expires",
                ", ".join(member.id for member in jobs),
                exc,
            )

    def _companions(self, job: Job, record: Model | None) -> list[Job]:
        """Queued jobs of ``job``'s batch key, claimed to share its engine call (after waiting up to
        ``FPF_BATCH_WINDOW_MS`` for more to arrive while the batch has room); ``record`` is the
        job's model record (None when it is gone)."""
        room = self.settings.batch_max_jobs
        if room <= 1 or job.batch_key is None or not self._batchable(job, record):
            return []
        window_s = self.settings.batch_window_ms / 1000
        if window_s > 0 and self.store.batch_depth(job.batch_key) < room - 1:
            time.sleep(window_s)
        return self.store.claim_batch(
            job, room, self.worker, self.settings.heartbeat_ttl_s, max_running=self.settings.quota_running_jobs
        )

    def _discard_deliveries(self, companions: list[Job]) -> None:
        """Have the workers drop the companions' own queue messages unrun. Only a saving: a message
        that still arrives is skipped as stale by its claim, so a failure here is logged and ignored."""
        try:
            self.dispatcher.discard_deliveries([(member.id, member.dispatch) for member in companions])
        except Exception:  # a broker hiccup must not cost the batch its run
            log.warning("could not tell the workers to discard batched jobs' deliveries", exc_info=True)

    @staticmethod
    def _batchable(job: Job, record: Model | None) -> bool:
        """Whether the engine solves jobs with ``job``'s options (on the model of ``record``) in one
        solver pass. Others it would solve one after the other within the call, under one time limit:
        they are not batched."""
        from workers.engine import batchable

        n_states = None if record is None else record.n_states
        return batchable(FinderOptions.model_validate(job.options), n_states)

    def _end(self, ends: list[JobEnd]) -> None:
        """Record the outcomes of jobs of a batch, in one transaction (the store counts each in the
        duration histogram)."""
        for end, job in zip(ends, self._record_ends(ends), strict=True):
            if job is None:
                log.info(
                    "job %s: delivery %d no longer owns the job; %s dropped", end.job_id, end.dispatch, end.status.value
                )
            else:
                log.info("job %s: %s", end.job_id, end.status.value)

    def _record_ends(self, ends: list[JobEnd]) -> list[Job | None]:
        """Record the outcomes, waiting out a Redis outage while the heartbeats still hold the jobs."""
        give_up = time.monotonic() + self.settings.heartbeat_ttl_s
        delay = 0.1
        while True:
            try:
                return self.store.finish_all(ends)
            except redis.RedisError as exc:
                if time.monotonic() + delay > give_up:
                    raise StoreUnavailable(
                        f"Redis is unavailable ({type(exc).__name__}: {exc}); the outcomes "
                        + ", ".join(f"{end.job_id} {end.status.value}" for end in ends)
                        + " could not be recorded"
                    ) from exc
                time.sleep(delay)
                delay = min(2 * delay, 1.0)

    def _execute(
        self, jobs: list[Job], record: Model | None, limits: RunLimits, heartbeat: Heartbeat
    ) -> list[JobEnd | None]:
        """Per job of the batch (on the model of ``record``, None when it is gone), its end: the final
        status and the fields to record with it (None: settled already, when it stopped while the others
        went on). Every failure of a job becomes a problem document; a failure of Redis raises
        :class:`StoreUnavailable`."""

        def settle(index: int, stop: StopJob) -> None:
            log.info("job %s: stopped: %s", jobs[index].id, stop)
            heartbeat.drop(jobs[index].id)
            self._end([JobEnd(jobs[index].id, jobs[index].dispatch, JobStatus.CANCELLED)])

        reporter = BatchReporter(
            self.store,
            [ProgressReporter(self.store, job.id, job.dispatch) for job in jobs],
            [job.n_initial_states for job in jobs],
            settle,
        )
        try:
            outcomes, engine_s = self._solve(jobs, record, limits, reporter)
        except StopJob as stop:
            log.info("jobs %s: stopped: %s", ", ".join(job.id for job in jobs), stop)
            return [
                None if i in reporter.stopped else JobEnd(job.id, job.dispatch, JobStatus.CANCELLED)
                for i, job in enumerate(jobs)
            ]
        except (RequestTimedOut, SoftTimeLimitExceeded):  # the sandbox's deadline, or Celery's backstop
            limit = self.settings.hard_time_limit_s
            log.info("jobs %s: stopped at the hard time limit of %g s", ", ".join(job.id for job in jobs), limit)
            error = TimeLimitExceeded(
                f"the job ran past its hard time limit of {limit:g} s "
                f"(the search itself stops at {self.settings.soft_time_limit_s:g} s)",
                limit=limit,
            )
            outcomes, engine_s = [error] * len(jobs), 0.0
        except FpfError as exc:
            outcomes, engine_s = [exc] * len(jobs), 0.0
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis is unavailable ({type(exc).__name__}: {exc})") from exc
        except Exception as exc:
            log.exception("jobs %s: the engine failed", ", ".join(job.id for job in jobs))
            outcomes, engine_s = [FpfError(f"{type(exc).__name__}: {exc}")] * len(jobs), 0.0
        return [
            None if i in reporter.stopped else self._store_result(job, outcome, engine_s)
            for i, (job, outcome) in enumerate(zip(jobs, outcomes, strict=True))
        ]

    def _store_result(self, job: Job, outcome: ResultFile | FpfError, engine_s: float) -> JobEnd:
        """Write one job's result file: succeeded (partial or not), or failed with its problem."""
        if isinstance(outcome, FpfError):
            log.info("job %s: failed: %s", job.id, outcome)
            return JobEnd(job.id, job.dispatch, JobStatus.FAILED, {"error": outcome.to_problem()})
        with self.artifacts.atomic_write(self.artifacts.result_path(job.id)) as out:
            out.write(outcome.npz)
            result_bytes = out.tell()
        if outcome.partial:
            log.info("job %s: partial result: %s", job.id, outcome.partial_reason)
        changes = {"engine_s": engine_s, "partial": outcome.partial}
        return JobEnd(job.id, job.dispatch, JobStatus.SUCCEEDED, changes, result_bytes=result_bytes)

    def _solve(
        self, jobs: list[Job], record: Model | None, limits: RunLimits, reporter: BatchReporter
    ) -> tuple[list[ResultFile | FpfError], float]:
        leader = jobs[0]
        path = self.artifacts.model_path(leader.model_id)
        if record is None or not path.exists():
            raise ModelNotFound(f"model {leader.model_id} was deleted")
        options = FinderOptions.model_validate(leader.options)
        arrays_paths = [self.artifacts.arrays_path(job.id) for job in jobs]
        return self.models.solve(record, path, arrays_paths, options, reporter, limits)


def validate_model(
    store: RecordStore,
    artifacts: ArtifactStore,
    models: Models,
    dispatcher: Dispatcher,
    model_id: str,
    tenant: str,
    *,
    time_limit_s: float,
    attempt: int = 1,
    max_n_states: int | None = None,
    max_n_inputs: int | None = None,
) -> None:
    """Load a freshly uploaded model: ``tenant``'s record becomes ``ready`` with its shapes, or ``invalid``
    with the loader's reason (or because it has more states or inputs than the server accepts).

    A load and dry run that pass ``time_limit_s`` are tried again (attempt ``attempt + 1``, through the
    queue), and after :data:`VALIDATION_ATTEMPTS` the model is invalid with ``validation_timeout``.
    """
    record = store.get_model(model_id, tenant)
    if record is None or record.status is not ModelStatus.VALIDATING:
        return
    try:
        described = models.describe(record, artifacts.model_path(model_id), time_limit_s)
        _check_dimensions(described, max_n_states=max_n_states, max_n_inputs=max_n_inputs)
    except (RequestTimedOut, SoftTimeLimitExceeded):
        validation_timed_out(store, dispatcher, model_id, tenant, time_limit_s=time_limit_s, attempt=attempt)
        return
    except FpfError as exc:
        error = exc if isinstance(exc, InvalidModel) else InvalidModel(f"the model cannot be loaded: {exc.detail}")
    except Exception as exc:
        log.info("model %s: cannot be loaded", model_id, exc_info=True)
        error = InvalidModel(f"the model cannot be loaded: {type(exc).__name__}: {exc}")
    else:
        store.update_model(
            model_id, tenant, [ModelStatus.VALIDATING], status=ModelStatus.READY, error=None, **described
        )
        log.info("model %s: ready %s", model_id, described)
        return
    store.update_model(model_id, tenant, [ModelStatus.VALIDATING], status=ModelStatus.INVALID, error=error.to_problem())
    log.info("model %s: invalid: %s", model_id, error.detail)


def validation_timed_out(
    store: RecordStore, dispatcher: Dispatcher, model_id: str, tenant: str, *, time_limit_s: float, attempt: int
) -> None:
    """A validation ran past its time limit (its worker has been freed): queue the next attempt, or
    after the last one mark the model ``invalid`` with ``validation_timeout``."""
    if attempt < VALIDATION_ATTEMPTS:
        log.warning(
            "model %s: validation attempt %d passed its time limit of %g s; trying again",
            model_id,
            attempt,
            time_limit_s,
        )
        dispatcher.validate_model(model_id, tenant, attempt=attempt + 1)
        return
    error = ValidationTimeout(
        f"loading the model and running its step on a few states did not finish within the validation time "
        f"limit of {time_limit_s:g} s, in {attempt} attempts; its forward may never return "
        f"(the limit is FPF_VALIDATION_TIME_LIMIT_S)",
        limit=time_limit_s,
        attempts=attempt,
    )
    store.update_model(model_id, tenant, [ModelStatus.VALIDATING], status=ModelStatus.INVALID, error=error.to_problem())
    log.warning("model %s: invalid: %s", model_id, error.detail)


def _check_dimensions(described: dict[str, Any], *, max_n_states: int | None, max_n_inputs: int | None) -> None:
    """InvalidModel when a described model has more states or inputs than the server's limits."""
    for name, limit, setting in (
        ("n_states", max_n_states, "FPF_MAX_N_STATES"),
        ("n_inputs", max_n_inputs, "FPF_MAX_N_INPUTS"),
    ):
        value = described.get(name)
        if limit is not None and value is not None and value > limit:
            raise InvalidModel(
                f"the model has {name} = {value}; this server accepts at most {limit} ({setting})", limit=limit
            )


def _result_file(
    outcome: T | FpfError, make: Callable[[T, int], ResultFile], max_result_bytes: int
) -> ResultFile | FpfError:
    """One job's outcome as its result file made by ``make`` (``ResultFile.of`` from fixed points,
    ``ResultFile.verified`` from a sandbox's bytes), or the error that ended it."""
    if isinstance(outcome, FpfError):
        return outcome
    try:
        return make(outcome, max_result_bytes)
    except FpfError as exc:
        return exc


def _wire(record: Model) -> dict[str, Any]:
    """What the sandboxed child needs to know of a model record (the arguments of ``load_model``)."""
    return {"id": record.id, **_load_arguments(record)}


def _load_arguments(record: Model) -> dict[str, Any]:
    """The keyword arguments of ``workers.engine.load_model`` for a record: format, hints, tensor names."""
    return {
        "format": record.format,
        "n_states": record.n_states,
        "n_inputs": record.n_inputs,
        "dynamics": record.dynamics,
        "signature": record.signature,
        "input_name": record.input_name,
        "state_name": record.state_name,
        "output_name": record.output_name,
    }


def _share(report: dict[str, Any], size: int) -> dict[str, Any]:
    """A progress report of a whole batch as one job of ``size`` initial states sees it."""
    n_total = report.get("n_total")
    if not n_total:
        return report
    return {**report, "n_total": size, "n_converged": round(report.get("n_converged", 0) * size / n_total)}


def _plain(progress: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of an engine progress report (numpy scalars to Python numbers)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in progress.items()}
