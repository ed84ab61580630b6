"""The RPCs of ``fpf.v1.FixedPointService``: each one is the REST route of the same name, over gRPC.

Validation, storage and queueing are :mod:`service.gateway.operations` and :mod:`service.gateway.submission`,
the functions the HTTP routes call; records are rendered through the same ``ModelOut`` /
``JobOut`` schemas, then converted by :mod:`fpf_client.rpc.codec`.
"""

from __future__ import annotations

import functools
import inspect
import io
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2
from pydantic import ValidationError

from fpf_client.errors import FpfError, InvalidArray, InvalidRequest, JobNotFound, PayloadTooLarge
from fpf_client.records import MAX_RESULT_WAIT_S
from fpf_client.rpc import codec
from fpf_client.rpc.stubs import load
from service.core.artifacts import ArtifactStore
from service.core.outages import OUTAGE_ERRORS, unavailable
from service.core.queue import Dispatcher
from service.core.records import Job, JobStatus
from service.core.settings import Settings
from service.core.store import RecordStore
from service.gateway.auth import Principal
from service.gateway.operations import enqueue_job, remove_job, remove_model, result_path, store_model
from service.gateway.problems import describe_validation_errors
from service.gateway.quotas import Quotas
from service.gateway.schemas import JobOut, ModelOut, UploadHints
from service.gateway.scoping import find_job, find_model, visible_jobs, visible_models
from service.gateway.submission import Submission, parse_options
from service.grpc.results import result_chunks

log = logging.getLogger(__name__)
pb2, pb2_grpc = load().pb2, load().pb2_grpc

#: The caller of the ``authorization`` metadata (``Bearer KEY``, or None when absent), or
#: :class:`~fpf_client.errors.Unauthenticated`: :class:`service.gateway.auth.Authenticator`, which the REST
#: gateway calls with its ``Authorization`` header.
Authenticate = Callable[[str | None], Principal]

#: How long WatchJob and a waiting GetResult wait on the job's notices before they look at the job
#: (and the client) again.
WATCH_POLL_S = 1.0

F = TypeVar("F", bound=Callable[..., Any])


def rpc(method: F) -> F:
    """Run an RPC for the caller its API key names, answering :class:`FpfError` with its status and details.

    The decorated method gets the :class:`~service.gateway.auth.Principal` as a fourth argument.
    """

    def fail(self: FixedPointServicer, context: grpc.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, OUTAGE_ERRORS):
            log.warning("%s: %s: %s", method.__name__, type(exc).__name__, exc)
            exc = unavailable(exc, self.settings.unavailable_retry_after_s)
        elif not isinstance(exc, FpfError):
            log.exception("unhandled error in %s", method.__name__)
            exc = FpfError("internal server error")
        context.abort_with_status(codec.status_of_problem(exc.to_problem()))

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def streaming(self: FixedPointServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context, self.caller(context))
            except Exception as exc:
                fail(self, context, exc)

        return streaming  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: FixedPointServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context, self.caller(context))
        except Exception as exc:
            fail(self, context, exc)

    return unary  # type: ignore[return-value]


class FixedPointServicer(pb2_grpc.FixedPointServiceServicer):
    """The gRPC face of the gateway, over the same store, artifacts and queue."""

    def __init__(
        self,
        settings: Settings,
        store: RecordStore,
        artifacts: ArtifactStore,
        dispatcher: Dispatcher,
        authenticate: Authenticate,
        quotas: Quotas,
    ) -> None:
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.dispatcher = dispatcher
        self.authenticate = authenticate
        self.quotas = quotas

    def caller(self, context: grpc.ServicerContext) -> Principal:
        """Who is calling, from the ``authorization`` metadata (REST: the ``Authorization`` header)."""
        return self.authenticate(dict(context.invocation_metadata()).get("authorization"))

    # --- models ------------------------------------------------------------------------
    @rpc
    def UploadModel(self, request_iterator: Iterator[Any], context: grpc.ServicerContext, caller: Principal) -> Any:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidRequest("the first UploadModel message must be the header")
        hints = _upload_hints(first.header)
        source = _ChunkReader(request_iterator, self.settings.max_body_bytes)
        model, _ = store_model(
            self.store,
            self.artifacts,
            self.dispatcher,
            source,
            filename=first.header.filename or None,
            hints=hints.record_fields(),
            principal=caller,
            quotas=self.quotas,
        )
        return codec.model_message(ModelOut.of(model).model_dump())

    @rpc
    def GetModel(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        return codec.model_message(ModelOut.of(find_model(self.store, caller, request.model_id)).model_dump())

    @rpc
    def ListModels(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        return pb2.ListModelsResponse(
            models=[codec.model_message(ModelOut.of(m).model_dump()) for m in visible_models(self.store, caller)]
        )

    @rpc
    def DeleteModel(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        remove_model(find_model(self.store, caller, request.model_id), self.store, self.artifacts)
        return empty_pb2.Empty()

    # --- jobs ----------------------------------------------------------------------------
    @rpc
    def SubmitJob(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        if not request.model_id:
            raise InvalidRequest("model_id is required", field="model_id")
        if not request.HasField("initial_states"):
            raise InvalidArray("initial_states is required", field="initial_states")
        limit = self.settings.max_array_elements
        submission = Submission(
            model_id=request.model_id,
            options=parse_options(request.options_json or "{}"),
            initial_states=codec.array_of_message(request.initial_states, "initial_states", max_elements=limit),
            inputs=(
                codec.array_of_message(request.inputs, "inputs", max_elements=limit)
                if request.HasField("inputs")
                else None
            ),
            cond_ids=(
                codec.array_of_message(request.cond_ids, "cond_ids", max_elements=limit)
                if request.HasField("cond_ids")
                else None
            ),
        )
        job, _ = enqueue_job(
            submission,
            request.idempotency_key or None,
            self.settings,
            self.store,
            self.artifacts,
            self.dispatcher,
            principal=caller,
            quotas=self.quotas,
        )
        return _job_message(job)

    @rpc
    def GetJob(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        return _job_message(find_job(self.store, caller, request.job_id))

    @rpc
    def ListJobs(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        limit = request.limit or 100
        if not 1 <= limit <= 1000:
            raise InvalidRequest(f"limit must be between 1 and 1000, not {limit}", field="limit")
        status = JobStatus(codec.job_status_text(request.status)) if request.HasField("status") else None
        return pb2.ListJobsResponse(jobs=[_job_message(j) for j in visible_jobs(self.store, caller, status, limit)])

    @rpc
    def WatchJob(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Iterator[Any]:
        find_job(self.store, caller, request.job_id)
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.store.keys.events(request.job_id))  # before reading: no change is missed
        try:
            last = None
            while context.is_active():
                job = self.store.get_job(request.job_id)
                if job is None:
                    return
                message = _job_message(job)
                if message != last:
                    yield message
                    last = message
                if job.status.is_final:
                    return
                pubsub.get_message(timeout=WATCH_POLL_S)
        finally:
            pubsub.close()

    @rpc
    def CancelJob(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        job = find_job(self.store, caller, request.job_id)
        cancelled = self.store.cancel(job.id)
        return _job_message(cancelled if cancelled is not None else job)

    @rpc
    def GetResult(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Iterator[Any]:
        if not 0 <= request.wait_s <= MAX_RESULT_WAIT_S:
            raise InvalidRequest(f"wait_s must be between 0 and {MAX_RESULT_WAIT_S:g} seconds", field="wait_s")
        job = self._ended(find_job(self.store, caller, request.job_id), request.wait_s, context)
        path = result_path(job, self.artifacts)
        for chunk in result_chunks(path):
            yield pb2.ResultChunk(
                name=chunk.name, dtype=chunk.dtype, shape=chunk.shape, offset=chunk.offset, data=chunk.data
            )

    def _ended(self, job: Job, wait_s: float, context: grpc.ServicerContext) -> Job:
        """``job`` once it has ended, or as it stands after ``wait_s`` seconds or when the caller left;
        JobNotFound when it is deleted meanwhile (REST: :func:`service.gateway.events.ended_job`)."""
        if job.status.is_final or wait_s <= 0:
            return job
        give_up = time.monotonic() + wait_s
        pubsub = self.store.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.store.keys.events(job.id))  # before reading: no change is missed
        try:
            while True:
                current = self.store.get_job(job.id)
                if current is None:
                    raise JobNotFound(f"job {job.id} was deleted")
                left = give_up - time.monotonic()
                if current.status.is_final or left <= 0 or not context.is_active():
                    return current
                pubsub.get_message(timeout=min(left, WATCH_POLL_S))
        finally:
            pubsub.close()

    @rpc
    def DeleteJob(self, request: Any, context: grpc.ServicerContext, caller: Principal) -> Any:
        remove_job(find_job(self.store, caller, request.job_id), self.store, self.artifacts)
        return empty_pb2.Empty()


def _job_message(job: Any) -> Any:
    return codec.job_message(JobOut.of(job).model_dump())


def _upload_hints(header: Any) -> UploadHints:
    """The upload header's fields, checked by the model that checks REST's form fields."""
    given = {name: getattr(header, name) for name in UploadHints.model_fields if header.HasField(name)}
    try:
        return UploadHints.model_validate(given)
    except ValidationError as exc:
        raise InvalidRequest(describe_validation_errors(exc.errors()), field=str(exc.errors()[0]["loc"][0])) from exc


class _ChunkReader(io.RawIOBase):
    """The bytes of an upload stream's chunks as a file, refused past ``max_bytes`` (REST's body limit)."""

    def __init__(self, messages: Iterator[Any], max_bytes: int) -> None:
        self._messages = messages
        self._max_bytes = max_bytes
        self._pending = memoryview(b"")
        self._total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            message = next(self._messages, None)
            if message is None:
                return 0
            if message.WhichOneof("part") != "chunk":
                raise InvalidRequest("only the first UploadModel message may be a header")
            self._pending = memoryview(message.chunk)
            self._total += len(self._pending)
            if self._total > self._max_bytes:
                raise PayloadTooLarge(f"the model exceeds {self._max_bytes} bytes", limit=self._max_bytes)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size
