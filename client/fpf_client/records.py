"""What the service says about models and jobs, as pydantic records (docs/api.md).

Fields the server may add later are ignored, and statuses are plain strings, so an older
client keeps working against a newer gateway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

#: Job statuses after which nothing changes any more.
FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
#: Most seconds one result request may ask the service to wait for its job to end (REST's ``wait``
#: query parameter, gRPC's ``wait_s``): a long poll, under the idle timeouts of common proxies.
MAX_RESULT_WAIT_S = 30.0


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Model(_Record):
    """An uploaded model: ``status`` is ``validating``, ``ready`` or ``invalid`` (then ``error`` says why)."""

    id: str
    status: str
    format: str | None = None
    filename: str | None = None
    size_bytes: int | None = None
    n_states: int | None = None
    n_inputs: int | None = None
    dynamics: str | None = None
    signature: str | None = None
    input_name: str | None = None
    state_name: str | None = None
    output_name: str | None = None
    #: ONNX: how the converted graph compared with onnxruntime (``max_abs_diff``, ``tolerance``, ...).
    validation: dict[str, Any] | None = None
    created_at: datetime | None = None
    error: dict[str, Any] | None = None


class JobProgress(_Record):
    """The engine's last progress report."""

    phase: str | None = None
    iteration: int | None = None
    n_total: int | None = None
    n_converged: int | None = None
    fraction_converged: float | None = None
    q_median: float | None = None
    q_max: float | None = None


class JobTimings(_Record):
    """Seconds spent queued, in the engine and in total (``None`` until known)."""

    queued_s: float | None = None
    engine_s: float | None = None
    total_s: float | None = None


class JobRecord(_Record):
    """A job as the service reports it: ``status`` is queued, running, succeeded, failed or cancelled."""

    id: str
    model_id: str | None = None
    status: str
    n_initial_states: int | None = None
    options: dict[str, Any] = {}
    progress: JobProgress | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    timings: JobTimings | None = None
    attempts: int | None = None
    cancel_requested: bool | None = None
    error: dict[str, Any] | None = None
    #: True when the job's wall-time limit stopped the search and the result holds what was found by then.
    partial: bool | None = None
    #: How many jobs the last attempt's engine call solved, this one included (1: it ran alone).
    batch_size: int | None = None

    @property
    def is_final(self) -> bool:
        """Whether the job has stopped (succeeded, failed or cancelled)."""
        return self.status in FINAL_JOB_STATUSES


__all__ = ["FINAL_JOB_STATUSES", "JobProgress", "JobRecord", "JobTimings", "Model"]
