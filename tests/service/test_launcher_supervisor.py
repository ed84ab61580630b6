"""The process supervisor behind ``fpf-server up``, on real (small Python) child processes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from service.ops.supervisor import Backoff, ProcessSpec, Supervisor

pytestmark = pytest.mark.integration

FAST = Backoff(initial_s=0.1, factor=2.0, maximum_s=0.4, stable_after_s=60.0)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait_for(predicate, timeout_s: float, what: str, supervisor: Supervisor | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        if supervisor is not None:
            supervisor.poll()
        time.sleep(0.02)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def supervisor(tmp_path: Path):
    sup = Supervisor(tmp_path, backoff=FAST, grace_s=1.0)
    yield sup
    sup.stop_all()


def test_backoff_grows_to_its_cap_and_resets_after_a_stable_run():
    delays = [None]
    for _ in range(5):
        delays.append(FAST.next_delay(delays[-1], uptime_s=0.5))
    assert delays[1:] == [0.1, 0.2, 0.4, 0.4, 0.4]
    assert FAST.next_delay(0.4, uptime_s=61.0) == 0.1


def test_a_child_that_dies_is_restarted_with_growing_delays(supervisor, tmp_path):
    starts = tmp_path / "starts"
    child = supervisor.start(ProcessSpec("flaky", _python(f"open({str(starts)!r}, 'a').write('x')")))
    _wait_for(lambda: child.restarts >= 3, 10, "three restarts", supervisor)
    assert len(starts.read_text()) >= 3
    assert child.delay_s == pytest.approx(0.4)


def test_killing_a_child_takes_its_own_children_with_it(supervisor):
    # The child starts a grandchild (as Celery starts its pool) and is then SIGKILLed.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    child = supervisor.start(ProcessSpec("parent", _python(code)))
    leader = psutil.Process(child.pid)
    _wait_for(lambda: len(leader.children()) == 1, 10, "the grandchild")
    grandchild = leader.children()[0]
    try:
        os.kill(child.pid, signal.SIGKILL)
        _wait_for(lambda: child.restarts == 1, 10, "the restart", supervisor)
        _wait_for(lambda: not _alive(grandchild), 5, "the orphaned grandchild to be killed")
        assert child.pid != leader.pid
    finally:
        if _alive(grandchild):
            grandchild.kill()


def test_pid_files_follow_the_running_child(supervisor, tmp_path):
    child = supervisor.start(ProcessSpec("sleeper", _python("import time; time.sleep(60)")))
    pid_file = tmp_path / "sleeper.pid"
    assert int(pid_file.read_text()) == child.pid
    first = child.pid
    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: child.pid not in (None, first), 10, "the restart", supervisor)
    assert int(pid_file.read_text()) == child.pid
    supervisor.stop_all()
    assert not pid_file.exists()


def test_stop_all_stops_higher_tiers_first_and_kills_what_ignores_sigterm(tmp_path):
    log = tmp_path / "stops"
    on_term = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(log)!r}, 'a').write(sys.argv[1] + '\\n'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    sup = Supervisor(tmp_path, backoff=FAST, grace_s=1.0)
    base = sup.start(ProcessSpec("base", [sys.executable, "-c", on_term, "base"], tier=0))
    top = sup.start(ProcessSpec("top", [sys.executable, "-c", on_term, "top"], tier=1))
    mule = sup.start(ProcessSpec("mule", _python(stubborn), tier=1))
    procs = [psutil.Process(c.pid) for c in (base, top, mule)]
    time.sleep(0.5)  # let the children install their handlers
    began = time.monotonic()
    sup.stop_all()
    elapsed = time.monotonic() - began
    assert log.read_text().split() == ["top", "base"]
    assert not any(_alive(p) for p in procs)
    assert 1.0 <= elapsed < 4.0, "the stubborn child is killed after the grace period, not before or much later"


def test_stop_all_kills_at_once_when_forced(tmp_path):
    sup = Supervisor(tmp_path, backoff=FAST, grace_s=30.0)
    child = sup.start(
        ProcessSpec(
            "mule", _python("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
        )
    )
    proc = psutil.Process(child.pid)
    time.sleep(0.3)
    began = time.monotonic()
    sup.stop_all(force=lambda: time.monotonic() - began > 0.2)
    assert time.monotonic() - began < 3.0
    assert not _alive(proc)
