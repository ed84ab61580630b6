"""What a worker does with a job or a model: load, run the engine, report, store the outcome.

The Celery tasks (workers/tasks.py) are thin wrappers around :class:`JobRunner` and
:func:`validate_model`. torch and the engine are imported on first use, never at import.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from fpf_client.errors import FpfError, InvalidModel, ModelNotFound
from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions

from service.artifacts import ArtifactStore
from service.records import Job, JobStatus, Model, ModelStatus
from service.settings import Settings
from service.store import JobStore

from .heartbeat import Heartbeat

if TYPE_CHECKING:
    from workers.engine import StepModel

log = logging.getLogger(__name__)

#: Progress reports closer together than this are dropped (the engine may report every few iterations).
PROGRESS_MIN_INTERVAL_S = 0.1


class StopJob(Exception):
    """Raised from the progress callback to stop the engine: cancelled, deleted or taken over."""


class ProgressReporter:
    """The engine's progress callback: write progress to the store, stop when the job is no longer wanted."""

    def __init__(self, store: JobStore, job_id: str, dispatch: int) -> None:
        self.store = store
        self.job_id = job_id
        self.dispatch = dispatch
        self._last = 0.0

    def __call__(self, progress: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._last < PROGRESS_MIN_INTERVAL_S:
            return
        self._last = now
        ack = self.store.report_progress(self.job_id, self.dispatch, _plain(progress))
        if ack.cancel_requested:
            raise StopJob("cancelled on request")
        if not ack.owned:
            raise StopJob("the job was deleted or handed to another worker")


class ModelCache:
    """Loaded StepModels by tenant and model id (ids are content hashes, so an entry never goes stale;
    the tenant is part of the key because each tenant's record carries its own format hints)."""

    def __init__(self, store: JobStore, artifacts: ArtifactStore, size: int = 4) -> None:
        self.store = store
        self.artifacts = artifacts
        self.size = size
        self._models: OrderedDict[tuple[str, str], "StepModel"] = OrderedDict()

    def get(self, model_id: str, tenant: str) -> "StepModel":
        key = (tenant, model_id)
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        record = self.store.get_model(model_id, tenant)
        path = self.artifacts.model_path(model_id)
        if record is None or not path.exists():
            raise ModelNotFound(f"model {model_id} was deleted")
        model = load(path, record)
        self._models[key] = model
        if len(self._models) > self.size:
            self._models.popitem(last=False)
        return model


def load(path: os.PathLike, record: Model) -> "StepModel":
    """The StepModel of a stored model file, with the record's format, shapes and dynamics."""
    from workers.engine import load_model

    return load_model(path, format=record.format, n_states=record.n_states, n_inputs=record.n_inputs,
                      dynamics=record.dynamics)


class JobRunner:
    """Run one delivery of a job, from claim to stored result."""

    def __init__(self, store: JobStore, artifacts: ArtifactStore, settings: Settings, models: ModelCache) -> None:
        self.store = store
        self.artifacts = artifacts
        self.settings = settings
        self.models = models
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job_id: str, dispatch: int) -> None:
        """Claim delivery ``dispatch`` (skip it when stale), solve, store the result, record the end."""
        job = self.store.claim(job_id, dispatch, self.worker, self.settings.heartbeat_ttl_s)
        if job is None:
            log.info("job %s: delivery %d is stale or cancelled; skipped", job_id, dispatch)
            return
        log.info("job %s: attempt %d started on %s", job_id, job.attempts, self.worker)
        with Heartbeat(self.store, job_id, dispatch, interval_s=self.settings.heartbeat_interval_s,
                       ttl_s=self.settings.heartbeat_ttl_s):
            status, changes = self._execute(job)
        finished = self.store.finish(job_id, dispatch, status, **changes)
        if finished is None:
            log.info("job %s: delivery %d no longer owns the job; outcome %s dropped", job_id, dispatch, status.value)
            return
        log.info("job %s: %s", job_id, status.value)
        self.store.observe_duration(finished.finished_at - finished.created_at)

    def _execute(self, job: Job) -> tuple[JobStatus, dict[str, Any]]:
        """The final status and the fields to record with it; every failure becomes a problem document."""
        try:
            fixed_points, engine_s = self._solve(job)
            with self.artifacts.atomic_write(self.artifacts.result_path(job.id)) as out:
                # Uncompressed: float results hardly compress, and zlib costs a small job several ms.
                np.savez(out, **fixed_points.to_npz_arrays())
        except StopJob as stop:
            log.info("job %s: stopped: %s", job.id, stop)
            return JobStatus.CANCELLED, {}
        except SoftTimeLimitExceeded:
            limit = self.settings.soft_time_limit_s
            return JobStatus.FAILED, {"error": FpfError(f"the job ran past its time limit of {limit} s").to_problem()}
        except FpfError as exc:
            log.info("job %s: failed: %s", job.id, exc)
            return JobStatus.FAILED, {"error": exc.to_problem()}
        except Exception as exc:
            log.exception("job %s: the engine failed", job.id)
            return JobStatus.FAILED, {"error": FpfError(f"{type(exc).__name__}: {exc}").to_problem()}
        return JobStatus.SUCCEEDED, {"engine_s": engine_s}

    def _solve(self, job: Job) -> tuple[FixedPoints, float]:
        from workers.engine import find_fixed_points

        model = self.models.get(job.model_id, job.tenant)
        with np.load(self.artifacts.arrays_path(job.id), allow_pickle=False) as arrays:
            initial_states, inputs = arrays["initial_states"], arrays["inputs"]
        options = FinderOptions.model_validate(job.options)
        progress = ProgressReporter(self.store, job.id, job.dispatch)
        start = time.perf_counter()
        fixed_points = find_fixed_points(model, initial_states, inputs, options, progress=progress)
        return fixed_points, time.perf_counter() - start


def validate_model(store: JobStore, artifacts: ArtifactStore, model_id: str, tenant: str) -> None:
    """Load a freshly uploaded model: ``tenant``'s record becomes ``ready`` with its shapes, or ``invalid``
    with the loader's reason."""
    record = store.get_model(model_id, tenant)
    if record is None or record.status is not ModelStatus.VALIDATING:
        return
    try:
        described = load(artifacts.model_path(model_id), record).describe()
    except FpfError as exc:
        error = exc if isinstance(exc, InvalidModel) else InvalidModel(exc.detail)
    except Exception as exc:
        log.info("model %s: cannot be loaded", model_id, exc_info=True)
        error = InvalidModel(f"the model cannot be loaded: {type(exc).__name__}: {exc}")
    else:
        store.update_model(model_id, tenant, [ModelStatus.VALIDATING], status=ModelStatus.READY, error=None,
                           **described)
        log.info("model %s: ready %s", model_id, described)
        return
    store.update_model(model_id, tenant, [ModelStatus.VALIDATING], status=ModelStatus.INVALID,
                       error=error.to_problem())
    log.info("model %s: invalid: %s", model_id, error.detail)


def _plain(progress: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe copy of an engine progress report (numpy scalars to Python numbers)."""
    return {k: v.item() if isinstance(v, np.generic) else v for k, v in progress.items()}
