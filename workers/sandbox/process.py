"""The worker's handle on one sandboxed child: start it, exchange frames with it, watch it, kill it.

Every exchange either ends cleanly (an answer, or an ``error`` frame: the child stays
usable) or kills the child: a crash, a limit, a malformed frame, a cancel or a time
limit raised in the worker all leave no half-finished child behind.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fpf_client.errors import FpfError

from .command import Limits, child_command, spawn
from .frames import FrameError, read_frame, write_frame

log = logging.getLogger(__name__)

#: Seconds between checks of a busy child (CPU time used, whether the job is still wanted).
TICK_S = 0.25
#: A child that has not said ``ready`` after this long is given up on.
START_TIMEOUT_S = 300.0


class Listener(Protocol):
    """Who follows a job in the child; either method may raise to stop it (the child is then killed)."""

    def progress(self, report: dict[str, Any]) -> None:
        """A progress report from the engine."""

    def idle(self) -> None:
        """Called every :data:`TICK_S` of work without a report."""


class BatchListener(Protocol):
    """Who follows the jobs of a batch in the child; either method may raise to stop them all."""

    def progress(self, report: dict[str, Any], job: int | None) -> None:
        """A progress report of job ``job`` of the batch (its index), or of every job (None)."""

    def idle(self) -> None:
        """Called every :data:`TICK_S` of work without a report."""


@dataclass(frozen=True)
class BatchJob:
    """One job of a batch as the child receives it: its arrays ``.npz`` and its result's size limit."""

    arrays_npz: bytes | memoryview
    max_result_bytes: int | None = None


class _Single:
    """A job's :class:`Listener` following a batch of one."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener

    def progress(self, report: dict[str, Any], job: int | None) -> None:
        self.listener.progress(report)

    def idle(self) -> None:
        self.listener.idle()


class SandboxFailure(FpfError):
    """The child died or broke a limit; the job fails with this, the worker goes on."""


class RequestTimedOut(Exception):
    """A request ran past the wall-time limit it was given; the child has been killed."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"no answer within {limit_s:g} s")
        self.limit_s = limit_s


class Deadline:
    """A request's wall-time limit, from now: past it the exchange ends with :class:`RequestTimedOut`
    and the child is killed. It checks before handing each event on to ``listener``, if any."""

    def __init__(self, limit_s: float, listener: BatchListener | None = None) -> None:
        self.limit_s = limit_s
        self.end = time.monotonic() + limit_s
        self.listener = listener

    def progress(self, report: dict[str, Any], job: int | None = None) -> None:
        self._check()
        if self.listener is not None:
            self.listener.progress(report, job)

    def idle(self) -> None:
        self._check()
        if self.listener is not None:
            self.listener.idle()

    def _check(self) -> None:
        if time.monotonic() > self.end:
            raise RequestTimedOut(self.limit_s)


class Sandbox:
    """One child process under bubblewrap; requests run one at a time."""

    def __init__(self, limits: Limits, *, data_dir: Path, bwrap: str | None = None) -> None:
        self.limits = limits
        info_read, info_write = os.pipe()
        try:
            self.process = spawn(
                child_command(limits),
                limits,
                data_dir=data_dir,
                info_fd=info_write,
                bwrap=bwrap,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
        except BaseException:
            os.close(info_read)
            raise
        finally:
            os.close(info_write)
        self._info = os.fdopen(info_read, "rb")
        self._init_pid: int | None = None
        self._ready = False

    # --- requests -----------------------------------------------------------------------
    def describe(
        self, record: dict[str, Any], model_bytes: Callable[[], bytes], *, time_limit_s: float | None = None
    ) -> dict[str, Any]:
        """Load the model of ``record`` (a Model's id, format, shapes, dynamics) and describe it.

        ``time_limit_s`` counts from the moment the child is ready, so that only the model's own
        loading and dry run count: past it the child is killed and :class:`RequestTimedOut` raised.
        """
        self.wait_ready()
        listener = None if time_limit_s is None else Deadline(time_limit_s)
        header, _ = self._exchange({"op": "describe", "model": record}, [], model_bytes, listener)
        return header["model"]

    def solve(
        self,
        record: dict[str, Any],
        model_bytes: Callable[[], bytes],
        arrays_npz: bytes,
        options: dict[str, Any],
        listener: Listener,
        *,
        limits: dict[str, float] | None = None,
    ) -> tuple[bytes | memoryview, float]:
        """Run the engine on one job's arrays; the result ``.npz`` bytes and the engine's seconds.

        ``limits`` may hold ``time_limit_s`` (the search then stops with a partial result) and
        ``max_result_bytes`` (a larger result is refused with ``result_too_large``).
        """
        limits = dict(limits or {})
        job = BatchJob(arrays_npz, limits.pop("max_result_bytes", None))
        [outcome], engine_s = self.solve_batch(record, model_bytes, [job], options, _Single(listener), limits=limits)
        if isinstance(outcome, FpfError):
            raise outcome
        return outcome, engine_s

    def solve_batch(
        self,
        record: dict[str, Any],
        model_bytes: Callable[[], bytes],
        jobs: Sequence[BatchJob],
        options: dict[str, Any],
        listener: BatchListener,
        *,
        limits: dict[str, float] | None = None,
    ) -> tuple[list[memoryview | FpfError], float]:
        """Run the engine once on the arrays of every job of a batch; per job its result ``.npz`` bytes
        (or the error that ended it alone, such as ``result_too_large``), and the engine's seconds.

        ``limits`` may hold ``time_limit_s``, after which the search stops with partial results.
        """
        request = {
            "op": "solve",
            "model": record,
            "options": options,
            "limits": limits or {},
            "jobs": [
                {"arrays_bytes": memoryview(job.arrays_npz).nbytes, "max_result_bytes": job.max_result_bytes}
                for job in jobs
            ],
        }
        header, payload = self._exchange(request, [job.arrays_npz for job in jobs], model_bytes, listener)
        answers = header.get("jobs")
        if not isinstance(answers, list) or len(answers) != len(jobs):
            raise self._broken(f"a result of {len(jobs)} jobs came back as {answers!r}")
        outcomes: list[memoryview | FpfError] = []
        offset = 0
        for answer in answers:
            if "problem" in answer:
                outcomes.append(FpfError.from_problem(answer["problem"]))
                continue
            size = int(answer["result_bytes"])
            outcomes.append(payload[offset : offset + size])
            offset += size
        if offset != len(payload):
            raise self._broken(f"a result of {len(payload)} bytes announced {offset}")
        return outcomes, float(header["engine_s"])

    # --- life ---------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the sandbox and wait until every process in it is gone.

        Killing the sandbox's init (PID 1 inside) makes the kernel kill the rest of its PID
        namespace, and init's exit waits for them; bwrap, its parent, then reaps it and exits.
        Before init is known, bwrap itself is killed (``--die-with-parent`` does the rest).
        """
        if self.process.poll() is None:
            if self._init_pid is not None:
                os.kill(self._init_pid, signal.SIGKILL)
            else:
                self.process.kill()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self._info):
            stream.close()

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Block until the child has imported the engine (the first request does this itself)."""
        if self._ready:
            return
        deadline = time.monotonic() + timeout_s
        try:
            while not self._readable(TICK_S):
                if time.monotonic() > deadline:
                    raise SandboxFailure(f"the sandbox did not start within {timeout_s:.0f} s")
            header, _ = read_frame(self.process.stdout, 0)
            if header.get("type") != "ready":
                raise SandboxFailure(f"the sandbox started with {header} instead of ready")
        except FrameError:
            raise self._death() from None
        except BaseException:
            self.kill()
            raise
        self._init_pid = json.loads(self._info.read())["child-pid"]
        self._ready = True

    # --- the exchange -------------------------------------------------------------------
    def _exchange(
        self,
        request: dict[str, Any],
        payload: Sequence[bytes | memoryview],
        model_bytes: Callable[[], bytes],
        listener: BatchListener | None,
    ) -> tuple[dict[str, Any], memoryview]:
        self.wait_ready()
        try:
            write_frame(self.process.stdin, request, *payload)
            cpu_start, checked = self.cpu_s(), time.monotonic()
            while True:
                if self._readable(TICK_S):
                    header, data = read_frame(self.process.stdout, self.limits.memory_bytes)
                    kind = header.get("type")
                    if kind in ("described", "result"):
                        return header, data
                    if kind == "error":
                        raise FpfError.from_problem(header["problem"])
                    if kind == "need_model":
                        write_frame(self.process.stdin, {"op": "model", "id": request["model"]["id"]}, model_bytes())
                    elif kind == "progress":
                        if listener is not None:
                            listener.progress(header["progress"], header.get("job"))
                    else:
                        raise FrameError(f"unexpected answer {kind!r}")
                elif listener is not None:
                    listener.idle()
                if time.monotonic() - checked >= TICK_S:
                    self._check_cpu(cpu_start)
                    checked = time.monotonic()
        except (FrameError, BrokenPipeError):
            raise self._death() from None
        except FpfError as exc:
            if not isinstance(exc, SandboxFailure):
                raise  # the model's or the engine's error: the child is still good
            self.kill()
            raise
        except BaseException:
            self.kill()  # cancelled, a time limit, or the worker itself failed
            raise

    def _readable(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.process.stdout], [], [], timeout_s)
        return bool(ready)

    def _check_cpu(self, start_s: float) -> None:
        if self.cpu_s() - start_s > self.limits.cpu_s:
            raise SandboxFailure(
                f"the job used more than its CPU-time limit of {self.limits.cpu_s:g} s", limit="cpu_time"
            )

    def _broken(self, what: str) -> SandboxFailure:
        """Kill a child that answered out of protocol."""
        self.kill()
        return SandboxFailure(f"the model's sandboxed process broke the protocol: {what}")

    def _death(self) -> SandboxFailure:
        """Reap the child (killing what is left after a short grace) and say why it ended."""
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        self.kill()
        cause = _cause(self.process.returncode)
        log.warning("sandbox child %s", cause)
        return SandboxFailure(f"the model's sandboxed process {cause}")

    def cpu_s(self) -> float:
        """CPU seconds used so far by every process in the sandbox."""
        if self._init_pid is None:
            return 0.0
        ticks = os.sysconf("SC_CLK_TCK")
        return sum(_cpu_ticks(pid) for pid in _descendants(self._init_pid)) / ticks


def _cause(returncode: int) -> str:
    """Why bwrap ended, from its exit status (128 + N when its child died of signal N)."""
    number = returncode - 128 if returncode > 128 else -returncode
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"exited with status {returncode}"
    return {
        "SIGKILL": "was killed (out of memory?)",
        "SIGXFSZ": "went over its file-size limit",
        "SIGSEGV": "crashed (segmentation fault)",
    }.get(name, f"was killed by {name}")


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (Linux /proc)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
    return found


def _cpu_ticks(pid: int) -> int:
    """utime + stime of a process, all its threads, in clock ticks; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])
