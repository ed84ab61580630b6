"""The job and model records kept in Redis hashes, and their (de)serialisation.

Each record is one Redis hash of strings; ``None`` means the field is absent. JSON
members (options, progress, error, validation) are stored as JSON text.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any, TypeVar


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class ModelStatus(str, Enum):
    VALIDATING = "validating"
    READY = "ready"
    INVALID = "invalid"


_JSON_FIELDS = {"options", "progress", "error", "validation"}
#: The tenant of records written while a server had no API keys (and before tenants existed).
DEFAULT_TENANT = "local"
R = TypeVar("R", bound="_Record")


@dataclass
class _Record:
    """A dataclass stored as a Redis hash of strings."""

    def to_fields(self) -> dict[str, str]:
        """The hash fields of the present (non-None) members."""
        return {k: encode_field(k, v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_fields(cls: type[R], raw: dict[str, str]) -> R:
        """Rebuild from a hash as read back with ``decode_responses=True``."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in raw:
                continue
            text = raw[f.name]
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            values[f.name] = _decode(f.name, kind, text)
        return cls(**values)


def encode_field(name: str, value: Any) -> str:
    """One member as hash-field text."""
    if name in _JSON_FIELDS:
        return json.dumps(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _decode(name: str, kind: str, text: str) -> Any:
    if name in _JSON_FIELDS:
        return json.loads(text)
    if kind.startswith("bool"):
        return text == "1"
    if kind.startswith("int"):
        return int(text)
    if kind.startswith("float"):
        return float(text)
    if kind.startswith("JobStatus"):
        return JobStatus(text)
    if kind.startswith("ModelStatus"):
        return ModelStatus(text)
    return text


@dataclass
class Job(_Record):
    """A fixed-point search: its request, state, progress and timings (epoch seconds)."""

    id: str
    model_id: str
    status: JobStatus
    n_initial_states: int
    options: dict[str, Any]
    created_at: float
    #: Incremented on every (re-)enqueue; a message whose dispatch differs is stale.
    dispatch: int = 1
    attempts: int = 0
    cancel_requested: bool = False
    progress: dict[str, Any] | None = None
    started_at: float | None = None
    finished_at: float | None = None
    engine_s: float | None = None
    worker: str | None = None
    error: dict[str, Any] | None = None
    #: The tenant that submitted the job; only it (and admins) can see it.
    tenant: str = DEFAULT_TENANT
    #: Succeeded with a partial result: the wall-time limit stopped the search (the result's info says where).
    partial: bool = False
    #: When the job's last message was sent to the queue (epoch seconds), for the janitor's re-sends.
    sent_at: float | None = None
    #: Jobs with the same key may be solved in one engine call (service/core/batching.py); None: never batched.
    batch_key: str | None = None
    #: How many jobs the last attempt's engine call solved, this one included (1: it ran alone).
    batch_size: int | None = None


@dataclass
class Model(_Record):
    """A tenant's record of an uploaded model file; the file is stored (once) by the sha256 of its bytes."""

    id: str
    status: ModelStatus
    size_bytes: int
    created_at: float
    format: str | None = None
    filename: str | None = None
    n_states: int | None = None
    n_inputs: int | None = None
    dynamics: str = "discrete"
    #: Tensor naming given at upload (ONNX and SavedModel): the signature, and the tensors of u, h and F.
    signature: str | None = None
    input_name: str | None = None
    state_name: str | None = None
    output_name: str | None = None
    #: How the loader checked the model against an independent runtime (ONNX: onnxruntime's max difference).
    validation: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: The tenant that uploaded it; each tenant uploading the same bytes has its own record.
    tenant: str = DEFAULT_TENANT
