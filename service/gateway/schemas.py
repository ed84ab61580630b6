"""The gateway's request and response bodies (see docs/api.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from fpf_client.options import FinderOptions
from service.core.records import Job, JobStatus, Model, ModelStatus


def _iso(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


class ModelFormat(str, Enum):
    """The model formats a worker loads (docs/model-contract.md)."""

    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch_export"
    ONNX = "onnx"
    SAVEDMODEL = "savedmodel"


def inline_definitions(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with each ``$ref`` to its ``$defs`` replaced by the definition, for a place in the
    OpenAPI document where a JSON schema's own ``$defs`` would not resolve (the models have no cycles)."""
    definitions = schema.get("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                beside = {key: value for key, value in node.items() if key != "$ref"}
                return inline({**definitions[node["$ref"].rsplit("/", 1)[-1]], **beside})
            return {key: inline(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


#: FinderOptions as the JSON schema of a job's ``options``: the groups of each method, and the flat
#: names of earlier versions marked deprecated.
OPTIONS_SCHEMA = {
    key: value for key, value in inline_definitions(FinderOptions.model_json_schema()).items() if key != "description"
}

#: A tensor or signature name given at upload.
TensorName = Annotated[str, Field(min_length=1, max_length=256)]


class UploadHints(BaseModel):
    """What an upload says about its model besides the bytes: REST form fields, the gRPC upload header.

    All optional; the worker checks them when it loads the model (docs/model-contract.md).
    """

    format: ModelFormat | None = Field(None, description="Detected from the file when absent")
    n_states: int | None = Field(None, ge=1, description="Hint, checked by a dry run")
    n_inputs: int | None = Field(None, ge=0, description="Hint, checked by a dry run")
    dynamics: Literal["discrete", "continuous"] = "discrete"
    signature: TensorName | None = Field(None, description="SavedModel signature (serving_default when absent)")
    input_name: TensorName | None = Field(None, description="ONNX/SavedModel input playing u")
    state_name: TensorName | None = Field(None, description="ONNX/SavedModel input playing the state h")
    output_name: TensorName | None = Field(None, description="ONNX/SavedModel output holding the next state")

    def record_fields(self) -> dict[str, Any]:
        """The model record's fields these set (None where not given, so a re-upload clears old ones)."""
        return self.model_dump(mode="json")


class ModelValidation(BaseModel):
    """How the loaded model was checked against an independent runtime (ONNX: the converted graph
    against onnxruntime on random states and inputs)."""

    max_abs_diff: float = Field(description="Largest absolute difference of the next state")
    tolerance: float = Field(description="The largest difference accepted for this model")
    n_samples: int | None = Field(None, description="Random (h, u) pairs compared")
    reference: str | None = Field(None, description="The runtime compared with, and its version")


class ModelOut(BaseModel):
    id: str = Field(description="sha256 of the model file's bytes")
    status: ModelStatus
    format: str | None
    filename: str | None
    size_bytes: int
    n_states: int | None
    n_inputs: int | None
    dynamics: str
    signature: str | None = Field(None, description="SavedModel signature named at upload")
    input_name: str | None = Field(None, description="Tensor playing the input u, named at upload")
    state_name: str | None = Field(None, description="Tensor playing the state h, named at upload")
    output_name: str | None = Field(None, description="Output holding the next state, named at upload")
    validation: ModelValidation | None = Field(None, description="Set for ONNX models once validated")
    created_at: datetime
    error: dict[str, Any] | None = Field(None, description="The problem document when status is invalid")

    @classmethod
    def of(cls, model: Model) -> ModelOut:
        return cls(
            id=model.id,
            status=model.status,
            format=model.format,
            filename=model.filename,
            size_bytes=model.size_bytes,
            n_states=model.n_states,
            n_inputs=model.n_inputs,
            dynamics=model.dynamics,
            signature=model.signature,
            input_name=model.input_name,
            state_name=model.state_name,
            output_name=model.output_name,
            validation=model.validation,
            created_at=_iso(model.created_at),
            error=model.error,
        )


class JobRequest(BaseModel):
    """A job as JSON; the same fields travel as multipart form fields with an ``.npz`` of the arrays.

    Strict: arrays hold JSON numbers only (no strings, no booleans).
    """

    model_config = {"extra": "forbid", "strict": True}

    model_id: str = Field(min_length=1)
    initial_states: list[list[float]] = Field(description="(n, n_states)")
    inputs: list[list[float]] | None = Field(None, description="(1 | n, n_inputs); zeros when absent")
    cond_ids: list[int] | None = Field(None, description="(n,) a label per initial state, reported as cond_id")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="FinderOptions (docs/engine.md, Options)",
        json_schema_extra=OPTIONS_SCHEMA,  # checked by FinderOptions, so that its errors are invalid_options
    )


class Progress(BaseModel):
    phase: str
    iteration: int
    n_total: int
    n_converged: int
    fraction_converged: float
    q_median: float | None
    q_max: float | None


class Timings(BaseModel):
    queued_s: float | None = Field(description="From submission to the start of the last attempt")
    engine_s: float | None = Field(description="Time spent in the engine")
    total_s: float | None = Field(description="From submission to the end")


class JobOut(BaseModel):
    id: str
    model_id: str
    status: JobStatus
    n_initial_states: int
    options: dict[str, Any]
    progress: Progress | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    timings: Timings
    attempts: int
    cancel_requested: bool
    error: dict[str, Any] | None
    partial: bool = Field(
        False,
        description="Succeeded with a partial result: the wall-time limit stopped the "
        "search, and the result's info says where (partial_reason).",
    )
    batch_size: int | None = Field(
        None,
        description="How many jobs the last attempt's engine call solved, this one included: jobs of the same "
        "tenant, model and options queued together are solved in one call (1: it ran alone).",
    )

    @classmethod
    def of(cls, job: Job) -> JobOut:
        started, finished = job.started_at, job.finished_at
        return cls(
            id=job.id,
            model_id=job.model_id,
            status=job.status,
            n_initial_states=job.n_initial_states,
            options=job.options,
            progress=_progress(job.progress),
            created_at=_iso(job.created_at),
            started_at=_iso(started),
            finished_at=_iso(finished),
            timings=Timings(
                queued_s=None if started is None else started - job.created_at,
                engine_s=job.engine_s,
                total_s=None if finished is None else finished - job.created_at,
            ),
            attempts=job.attempts,
            cancel_requested=job.cancel_requested,
            error=job.error,
            partial=job.partial,
            batch_size=job.batch_size,
        )


def _progress(raw: dict[str, Any] | None) -> Progress | None:
    if raw is None:
        return None
    n_total = int(raw.get("n_total", 0))
    n_converged = int(raw.get("n_converged", 0))
    return Progress(
        phase=str(raw.get("phase", "")),
        iteration=int(raw.get("iteration", 0)),
        n_total=n_total,
        n_converged=n_converged,
        fraction_converged=n_converged / n_total if n_total else 0.0,
        q_median=raw.get("q_median"),
        q_max=raw.get("q_max"),
    )
