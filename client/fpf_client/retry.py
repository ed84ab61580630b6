"""Riding out short outages: which failed calls are sent again, how long to wait, and what to say meanwhile.

A call that the service could not take (``503 service_unavailable``, a connection that failed
or dropped, gRPC ``UNAVAILABLE``) or refused for now (``429 quota_exceeded``, which stores
nothing) is sent again after a pause that doubles from :attr:`RetryPolicy.first_delay` up to
:attr:`RetryPolicy.max_delay`, with jitter so that many clients do not come back at once, and
never shorter than the service's ``Retry-After``. It gives up after :attr:`RetryPolicy.timeout`
seconds, or at the deadline of the ``wait()`` it serves (:func:`until`), and then raises the
last error. Only idempotent calls are retried after an error that may have come after the
service acted: the client sends every submission with an ``Idempotency-Key`` for that reason.
A connection that fails before the client has ever had an answer from the service is no outage
but (most likely) a wrong address: it is raised at once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar, cast

from .errors import ErrorCode, FpfError

log = logging.getLogger("fpf_client")

T = TypeVar("T")

#: Codes of answers that say "not now": the same call may succeed later.
RETRYABLE_CODES = frozenset({ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.QUOTA_EXCEEDED})

#: The deadline of the ``wait()`` being served (``time.monotonic()``), and whom to tell about a wait.
_wait_deadline: ContextVar[float | None] = ContextVar("fpf_wait_deadline", default=None)
_wait_note: ContextVar[Callable[[str], None] | None] = ContextVar("fpf_wait_note", default=None)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often a call is retried while the service is unavailable.

    Parameters
    ----------
    timeout : float
        Seconds one call keeps being retried (0 turns retries off); inside ``Job.wait(timeout=...)``
        the wait's own deadline takes its place.
    first_delay, max_delay : float
        The first pause and the longest one; each pause doubles, times a random factor in [0.5, 1].
    """

    timeout: float = 120.0
    first_delay: float = 0.2
    max_delay: float = 5.0

    def delays(self) -> Iterator[float]:
        """Exponential backoff with jitter."""
        for attempt in range(1_000_000):
            yield random.uniform(0.5, 1.0) * min(self.max_delay, self.first_delay * 2.0 ** min(attempt, 30))


@contextmanager
def until(deadline: float, note: Callable[[str], None] | None = None) -> Iterator[None]:
    """Within the block, calls are retried until ``deadline`` (``time.monotonic()``; infinite: the policy's
    own timeout), and ``note`` hears what they wait for."""
    tokens = (_wait_deadline.set(None if math.isinf(deadline) else deadline), _wait_note.set(note))
    try:
        yield
    finally:
        _wait_deadline.reset(tokens[0])
        _wait_note.reset(tokens[1])


def mark_unreached(exc: FpfError) -> FpfError:
    """Tag ``exc`` as a call that reached no service at all (refused or dropped connection)."""
    exc.unreached = True  # type: ignore[attr-defined]
    return exc


def is_unreached(exc: FpfError) -> bool:
    return bool(getattr(exc, "unreached", False))


def is_retryable(exc: FpfError, idempotent: bool) -> bool:
    """Whether ``exc`` says "not now". A 429 stored nothing, so any call may be sent again; after a 503
    or a lost connection only an idempotent one may, since the service may have acted on it."""
    if exc.code is ErrorCode.QUOTA_EXCEEDED:
        return True
    return idempotent and exc.code in RETRYABLE_CODES


def retry_after(exc: FpfError) -> float:
    """The service's ``Retry-After`` for this answer, in seconds (0 when it gave none)."""
    try:
        return max(0.0, float(exc.extra.get("retry_after_s") or 0.0))
    except (TypeError, ValueError):
        return 0.0


class Outage:
    """The retries of one call: the pause before each, when to give up, and the log lines that say so."""

    def __init__(
        self,
        policy: RetryPolicy,
        what: str,
        *,
        idempotent: bool,
        done_if: Collection[ErrorCode],
        seen: Callable[[], bool],
    ) -> None:
        self.policy = policy
        self.seen = seen
        self.what = what
        self.idempotent = idempotent
        self.done_if = done_if
        self.start = time.monotonic()
        wait_deadline = _wait_deadline.get()
        self.deadline = wait_deadline if wait_deadline is not None else self.start + policy.timeout
        self.attempts = 0
        self._delays = policy.delays()

    def pause(self, exc: FpfError) -> float | None:
        """Seconds to wait before the next attempt after ``exc``; None to give up (raise ``exc``)."""
        if self.policy.timeout <= 0 or not is_retryable(exc, self.idempotent):
            return None
        if is_unreached(exc) and not self.seen():
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            log.warning("%s: gave up after %.1f s: %s", self.what, time.monotonic() - self.start, exc)
            return None
        delay = min(max(next(self._delays), retry_after(exc)), left)
        self.attempts += 1
        message = f"{self.what}: {exc}; waiting for the service, next try in {delay:.1f} s (giving up in {left:.0f} s)"
        log.log(logging.WARNING if self.attempts == 1 else logging.INFO, message)
        note = _wait_note.get()
        if note is not None:
            note(f"waiting for the service: {exc.code.value}")
        return delay

    def settled(self, exc: FpfError) -> bool:
        """Whether a retry's ``exc`` means an earlier attempt already did the work (a delete answered 404)."""
        return self.attempts > 0 and exc.code in self.done_if

    def recovered(self) -> None:
        if self.attempts:
            log.warning("%s: the service answered again after %.1f s", self.what, time.monotonic() - self.start)


def call(
    policy: RetryPolicy,
    send: Callable[[], T],
    what: str,
    *,
    idempotent: bool = True,
    done_if: Collection[ErrorCode] = (),
    seen: Callable[[], bool] = lambda: True,
) -> T:
    """``send()``, retried through outages under ``policy``; ``seen()`` tells whether the service has
    ever answered (else a refused connection is raised at once)."""
    outage = Outage(policy, what, idempotent=idempotent, done_if=done_if, seen=seen)
    while True:
        try:
            result = send()
        except FpfError as exc:
            if outage.settled(exc):
                return cast(T, None)  # only calls answered with nothing (deletes) name done_if
            delay = outage.pause(exc)
            if delay is None:
                raise
            time.sleep(delay)
            continue
        outage.recovered()
        return result


async def acall(
    policy: RetryPolicy,
    send: Callable[[], Awaitable[T]],
    what: str,
    *,
    idempotent: bool = True,
    done_if: Collection[ErrorCode] = (),
    seen: Callable[[], bool] = lambda: True,
) -> T:
    """``await send()``, retried through outages under ``policy``; the coroutine twin of :func:`call`."""
    outage = Outage(policy, what, idempotent=idempotent, done_if=done_if, seen=seen)
    while True:
        try:
            result = await send()
        except FpfError as exc:
            if outage.settled(exc):
                return cast(T, None)  # only calls answered with nothing (deletes) name done_if
            delay = outage.pause(exc)
            if delay is None:
                raise
            await asyncio.sleep(delay)
            continue
        outage.recovered()
        return result
