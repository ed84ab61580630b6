"""Keep a few child processes alive: start them, restart the ones that die, stop them all cleanly.

This is the process supervision behind ``fpf-server up``. Each child runs in its own
session (process group), so a Ctrl-C in the terminal reaches only the launcher, which
then stops the children in a chosen order; and so a child's own descendants (Celery's
pool processes) can be found and killed with it, leaving no orphans.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Backoff:
    """Exponential restart delay, reset once a child has stayed up for a while.

    Attributes
    ----------
    initial_s, factor, maximum_s
        The first delay, its growth per consecutive crash, and its cap.
    stable_after_s
        A child that ran at least this long before dying is restarted after ``initial_s`` again.
    """

    initial_s: float = 0.5
    factor: float = 2.0
    maximum_s: float = 30.0
    stable_after_s: float = 60.0

    def next_delay(self, previous_s: float | None, uptime_s: float) -> float:
        """The delay before the next start, given the previous delay and how long the child lived."""
        if previous_s is None or uptime_s >= self.stable_after_s:
            return self.initial_s
        return min(previous_s * self.factor, self.maximum_s)


@dataclass(frozen=True)
class ProcessSpec:
    """What to run for one supervised part.

    Attributes
    ----------
    name
        Short name used in logs and for the pid file (``redis``, ``gateway``, ``worker-1``).
    argv
        The command line.
    env
        The child's complete environment; None inherits the launcher's.
    tier
        Stop order: higher tiers are stopped first, all children of one tier together
        (so Redis, tier 0, stops after the gateway and workers of tier 1).
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    tier: int = 0


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGTERM this child if the launcher dies without stopping it (e.g. SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group, ignoring a group that is already gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Supervised:
    """One child process and its restart state."""

    spec: ProcessSpec
    pid_file: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    delay_s: float | None = None
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        """The pid of the running child, None while it is down."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the child in a new session (its own process group)."""
        self.process = subprocess.Popen(
            list(self.spec.argv),
            env=dict(self.spec.env) if self.spec.env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.started_at = time.monotonic()
        self.restart_at = None
        if self.pid_file is not None:
            self.pid_file.write_text(f"{self.process.pid}\n")
        log.info("started %s (pid %d): %s", self.spec.name, self.process.pid, " ".join(self.spec.argv))

    def reap(self, backoff: Backoff) -> None:
        """If the child has exited, clean up its group and schedule a restart after a backoff."""
        if self.process is None or self.process.poll() is None:
            return
        code = self.process.returncode
        uptime = time.monotonic() - self.started_at
        _kill_group(self.process.pid, signal.SIGKILL)  # its own children (e.g. a Celery pool) go with it
        self.delay_s = backoff.next_delay(self.delay_s, uptime)
        self.restart_at = time.monotonic() + self.delay_s
        self.process = None
        log.warning(
            "%s exited with %s after %.1f s; restarting in %.1f s",
            self.spec.name,
            _describe_exit(code),
            uptime,
            self.delay_s,
        )

    def restart_if_due(self) -> None:
        """Start the child again once its backoff delay has passed."""
        if self.process is None and self.restart_at is not None and time.monotonic() >= self.restart_at:
            self.restarts += 1
            self.start()

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM to the group leader, which stops its own children)."""
        self.restart_at = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the child and everything left in its process group."""
        if self.process is not None:
            _kill_group(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def finish(self) -> None:
        """Forget the stopped child: kill stragglers of its group and remove its pid file."""
        if self.process is not None:
            _kill_group(self.process.pid, signal.SIGKILL)
            self.process = None
        if self.pid_file is not None:
            self.pid_file.unlink(missing_ok=True)


def _describe_exit(code: int) -> str:
    """``code 1`` or ``signal SIGKILL``, for the logs."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


class Supervisor:
    """Start, watch and stop a set of child processes.

    Parameters
    ----------
    run_dir
        Where pid files (``<name>.pid``) are written while a child runs; None writes none.
    backoff
        The restart policy.
    grace_s
        How long a child may take to stop after SIGTERM before it is killed.
    """

    def __init__(self, run_dir: Path | None = None, *, backoff: Backoff = Backoff(), grace_s: float = 10.0):
        self.run_dir = run_dir
        self.backoff = backoff
        self.grace_s = grace_s
        self.children: dict[str, Supervised] = {}

    def start(self, spec: ProcessSpec) -> Supervised:
        """Start a new supervised child."""
        if spec.name in self.children:
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        pid_file = self.run_dir / f"{spec.name}.pid" if self.run_dir is not None else None
        child = Supervised(spec, pid_file=pid_file)
        self.children[spec.name] = child
        child.start()
        return child

    def poll(self) -> None:
        """Notice children that died and restart those whose backoff has passed."""
        for child in self.children.values():
            child.reap(self.backoff)
            child.restart_if_due()

    def stop_all(self, force: Callable[[], bool] = lambda: False) -> None:
        """Stop every child, highest tier first; each tier gets ``grace_s`` before it is killed.

        Parameters
        ----------
        force
            Polled while waiting; when it returns True the remaining children are killed at once
            (a second Ctrl-C).
        """
        for tier in sorted({c.spec.tier for c in self.children.values()}, reverse=True):
            group = [c for c in self.children.values() if c.spec.tier == tier]
            for child in group:
                child.terminate()
            deadline = time.monotonic() + self.grace_s
            while time.monotonic() < deadline and not force():
                if all(c.process is None or c.process.poll() is not None for c in group):
                    break
                time.sleep(0.05)
            for child in group:
                if child.process is not None and child.process.poll() is None:
                    log.warning("%s did not stop within %.0f s; killing it", child.spec.name, self.grace_s)
                    child.kill()
                child.finish()
            log.info("stopped %s", ", ".join(c.spec.name for c in group))
