"""The sandboxes of one worker pool process: a warm child for each of the owners seen last, and a
spare started ahead.

A child serves the jobs of one owner (a tenant; a model while jobs carry no tenant) and no
other. Starting a child costs seconds of CPU (Python, torch, the engine), so the children of
the ``warm_owners`` most recent owners stay started between their jobs (tenants taking turns
on a shared server pay no start), the least recently served one is closed to make room for
another, and a dead child (a crash, a limit, a cancel) is replaced at its owner's next job.
A spare is started as soon as the previous one is taken: a new owner then waits for no start.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from .command import Limits
from .process import Sandbox

log = logging.getLogger(__name__)


class SandboxPool:
    """Hands out the child of an owner, starting, keeping and closing children as needed.

    Parameters
    ----------
    limits : what each child may use.
    data_dir : the worker's data directory (never visible to a child).
    spare : keep one unassigned child starting in the background.
    warm_owners : how many owners' children stay started between their jobs (at least 1).
    """

    def __init__(
        self, limits: Limits, *, data_dir: Path, spare: bool = True, warm_owners: int = 1, bwrap: str | None = None
    ) -> None:
        self.limits = limits
        self.data_dir = data_dir
        self.bwrap = bwrap
        self._keep_spare = spare
        self._warm_owners = max(1, warm_owners)
        self._children: OrderedDict[str, Sandbox] = OrderedDict()  # owner -> child, least recently used first
        self._spare: Sandbox | None = self._start() if spare else None

    def get(self, owner: str) -> Sandbox:
        """The live child of ``owner``; the least recently served owner's child is closed when room is needed."""
        child = self._children.pop(owner, None)
        if child is not None and child.alive:
            self._children[owner] = child
            return child
        if child is not None:
            child.kill()
        while len(self._children) >= self._warm_owners:
            evicted, oldest = self._children.popitem(last=False)
            log.info("sandbox of %s closed (room for %s)", evicted, owner)
            oldest.kill()
        self._children[owner] = child = self._take_spare()
        return child

    def close(self) -> None:
        """Kill every child."""
        for sandbox in [*self._children.values(), self._spare]:
            if sandbox is not None:
                sandbox.kill()
        self._children.clear()
        self._spare = None

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
