"""The clients' job logic, written once: what to ask the service, when to pause, and what to check.

Each operation that takes more than one call (upload and wait for validation, submit with an
upload, wait for a job with its event stream and polling in between, fetch a result that is not
there yet) is a generator of steps
(:data:`Step`). :func:`run` carries the steps out with a :class:`~fpf_client.transport.Transport`
for :class:`~fpf_client.Client`, :func:`arun` with an :class:`~fpf_client.transport.AsyncTransport`
for :class:`~fpf_client.AsyncClient`: the flows themselves neither send nor sleep.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass
from os import PathLike
from typing import Any, TypeVar

from . import protocol
from .errors import JobNotFinished
from .events import NoEventStream
from .fixed_points import FixedPoints
from .payloads import UploadHints, arrays_payload, is_local_model, model_file, model_id, options_payload
from .records import MAX_RESULT_WAIT_S, JobRecord, Model
from .retry import RetryPolicy
from .transport import AsyncTransport, Transport

T = TypeVar("T")


@dataclass(frozen=True)
class Ask:
    """Call the transport's operation ``op`` with ``args``; the flow gets its answer."""

    op: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Sleep:
    """Pause for ``seconds``."""

    seconds: float


class WatchEnd(enum.Enum):
    """How watching a job's event stream ended."""

    #: ``see`` said the job is over.
    STOPPED = "stopped"
    #: The stream ended or broke; it may be opened again.
    ENDED = "ended"
    #: The service streams no events: poll from now on.
    NO_STREAM = "no_stream"


@dataclass(frozen=True)
class Watch:
    """Read the job's event stream until ``see`` (given each record) returns True; the flow gets a
    :class:`WatchEnd`."""

    job_id: str
    deadline: float
    see: Callable[[JobRecord], bool]


Step = Ask | Sleep | Watch
#: A flow: it yields steps, is sent each step's answer, and returns its own value.
Flow = Generator[Step, Any, T]


def submission_key(idempotency_key: str | None, policy: RetryPolicy) -> str | None:
    """The ``Idempotency-Key`` a submission is sent with: the caller's, else (with retries on) a random one."""
    if idempotency_key is not None or policy.timeout <= 0:
        return idempotency_key
    return f"fpf-client-{uuid.uuid4().hex}"


# --- flows -----------------------------------------------------------------------------------
def upload_model(
    model: str | PathLike[str] | Any, hints: UploadHints, wait: bool, timeout: float | None
) -> Flow[Model]:
    """Upload a file or module and, with ``wait``, wait until the service has validated it."""
    record = yield Ask("upload_model", (model_file(model), hints))
    return (yield from await_model(record, timeout)) if wait else record


def await_model(record: Model, timeout: float | None) -> Flow[Model]:
    """Poll a model until it is no longer validating; raise ``InvalidModel`` unless it is usable."""
    deadline, delays = protocol.deadline_after(timeout), protocol.poll_delays()
    while record.status == "validating":
        left = protocol.seconds_left(deadline)
        if left <= 0:
            raise protocol.timed_out(f"model {record.id[:12]} still validating", timeout)
        yield Sleep(min(next(delays), left))
        record = yield Ask("get_model", (record.id,))
    return protocol.check_model_usable(record)


def submit(
    model: Model | str | PathLike[str] | Any,
    initial_states: Any,
    inputs: Any,
    *,
    idempotency_key: str | None,
    cond_ids: Any,
    options: dict[str, Any],
    policy: RetryPolicy,
) -> Flow[JobRecord]:
    """Check options and arrays locally, upload a local model (with the arrays' shapes as hints), and
    queue the job."""
    option_values = options_payload(options)
    arrays = arrays_payload(initial_states, inputs, cond_ids)
    if is_local_model(model):
        hints = UploadHints(n_states=arrays.n_states, n_inputs=arrays.n_inputs)
        model = yield from upload_model(model, hints, wait=True, timeout=None)
    key = submission_key(idempotency_key, policy)
    record: JobRecord = yield Ask("submit_job", (model_id(model), arrays, option_values, key))
    return record


class _Follower:
    """Hands each record of a job to ``see`` and remembers the last one and the final one."""

    def __init__(self, see: Callable[[JobRecord], None]) -> None:
        self._see = see
        self.last: JobRecord | None = None
        self.final: JobRecord | None = None

    def __call__(self, record: JobRecord) -> bool:
        """Take ``record``; True once the job is over."""
        self.last = record
        self._see(record)
        if record.is_final:
            self.final = record
        return record.is_final


def wait(job_id: str, see: Callable[[JobRecord], None], deadline: float, timeout: float | None) -> Flow[JobRecord]:
    """Follow a job until it stops and return its final record; ``see`` gets every record.

    Records come from the job's event stream, opened again after it breaks (a restart), with a
    poll in between; or from polling throughout when the service streams no events.

    Raises
    ------
    TimeoutError
        At ``deadline`` (``time.monotonic()``), ``timeout`` seconds after the wait began; the job
        keeps running.
    """
    follow = _Follower(see)
    record: JobRecord = yield Ask("get_job", (job_id,))
    if follow(record):
        return record
    streams = True
    for delay in protocol.poll_delays(longest=2.0):
        if streams:
            streams = (yield Watch(job_id, deadline, follow)) is not WatchEnd.NO_STREAM
            if follow.final is not None:
                return follow.final
        left = protocol.seconds_left(deadline)
        if left <= 0:
            break
        yield Sleep(min(delay, left))
        record = yield Ask("get_job", (job_id,))
        if follow(record):
            return record
    status = follow.last.status if follow.last is not None else "unknown"
    raise protocol.timed_out(f"job {job_id} still {status}", timeout)


def result(job_id: str, deadline: float, timeout: float | None) -> Flow[FixedPoints]:
    """The fixed points of a job, in one request that has the service wait for the job to end (up to
    :data:`~fpf_client.records.MAX_RESULT_WAIT_S`), asked again until ``deadline``.

    A service that answers ``job_not_finished`` sooner than asked (one that does not wait) is polled.

    Raises
    ------
    JobFailed, JobCancelled
        When the job did not succeed.
    TimeoutError
        At ``deadline``; the job keeps running.
    """
    delays = protocol.poll_delays(longest=2.0)
    while True:
        wait_s = max(0.0, min(protocol.seconds_left(deadline), MAX_RESULT_WAIT_S))
        asked_at = time.monotonic()
        try:
            fixed_points: FixedPoints = yield Ask("job_result", (job_id, wait_s))
            return fixed_points
        except JobNotFinished as exc:
            left = protocol.seconds_left(deadline)
            if left <= 0:
                raise protocol.timed_out(exc.detail, timeout) from None
            if time.monotonic() - asked_at < wait_s / 2:
                yield Sleep(min(next(delays), left))


# --- drivers ---------------------------------------------------------------------------------
def run(transport: Transport, flow: Flow[T]) -> T:
    """Carry out ``flow`` with a blocking transport; a step's exception is raised inside the flow."""
    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        answer, error = None, None
        try:
            answer = _do(transport, step)
        except Exception as exc:
            error = exc


def _do(transport: Transport, step: Step) -> Any:
    if isinstance(step, Sleep):
        time.sleep(step.seconds)
        return None
    if isinstance(step, Watch):
        events = transport.job_events(step.job_id, step.deadline)
        try:
            for record in events:
                if step.see(record):
                    return WatchEnd.STOPPED
        except NoEventStream:
            return WatchEnd.NO_STREAM
        finally:
            events.close()
        return WatchEnd.ENDED
    return getattr(transport, step.op)(*step.args)


async def arun(transport: AsyncTransport, flow: Flow[T]) -> T:
    """Carry out ``flow`` with an asynchronous transport, as :func:`run` does."""
    answer: Any = None
    error: Exception | None = None
    while True:
        try:
            step = flow.send(answer) if error is None else flow.throw(error)
        except StopIteration as stop:
            result: T = stop.value
            return result
        answer, error = None, None
        try:
            answer = await _ado(transport, step)
        except Exception as exc:
            error = exc


async def _ado(transport: AsyncTransport, step: Step) -> Any:
    if isinstance(step, Sleep):
        await asyncio.sleep(step.seconds)
        return None
    if isinstance(step, Watch):
        events = transport.job_events(step.job_id, step.deadline)
        try:
            async for record in events:
                if step.see(record):
                    return WatchEnd.STOPPED
        except NoEventStream:
            return WatchEnd.NO_STREAM
        finally:
            await events.aclose()
        return WatchEnd.ENDED
    return await getattr(transport, step.op)(*step.args)
