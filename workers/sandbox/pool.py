"""The sandboxes of one worker pool process: a warm child per owner, and a spare started ahead.

A child serves the jobs of one owner (a tenant; a model while jobs carry no tenant) and is
replaced when a job of another owner comes, or when it died (a crash, a limit, a cancel).
Starting a child costs seconds (Python, torch, the engine), so a spare is started as soon
as the previous one is taken: switching owners then costs nothing but a kill.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .command import Limits
from .process import Sandbox

log = logging.getLogger(__name__)


class SandboxPool:
    """Hands out the child of an owner, starting or replacing children as needed.

    Parameters
    ----------
    limits : what each child may use.
    data_dir : the worker's data directory (never visible to a child).
    spare : keep one unassigned child starting in the background.
    """

    def __init__(self, limits: Limits, *, data_dir: Path, spare: bool = True, bwrap: str | None = None) -> None:
        self.limits = limits
        self.data_dir = data_dir
        self.bwrap = bwrap
        self._keep_spare = spare
        self._owner: str | None = None
        self._current: Sandbox | None = None
        self._spare: Sandbox | None = self._start() if spare else None

    def get(self, owner: str) -> Sandbox:
        """The live child of ``owner``; any other owner's child is killed first."""
        if self._current is not None and self._owner == owner and self._current.alive:
            return self._current
        if self._current is not None:
            log.info("sandbox of %s replaced (next owner %s)", self._owner, owner)
            self._current.kill()
        self._current, self._owner = self._take_spare(), owner
        return self._current

    def close(self) -> None:
        """Kill every child."""
        for sandbox in (self._current, self._spare):
            if sandbox is not None:
                sandbox.kill()
        self._current = self._spare = None

    def _take_spare(self) -> Sandbox:
        spare, self._spare = self._spare, None
        if spare is not None and not spare.alive:
            spare.kill()
            spare = None
        if self._keep_spare:
            self._spare = self._start()
        return spare if spare is not None else self._start()

    def _start(self) -> Sandbox:
        return Sandbox(self.limits, data_dir=self.data_dir, bwrap=self.bwrap)
