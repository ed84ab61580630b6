"""Progress reports and the time limit: solver hooks turned into the public callback's dicts,
throttled in time, and the deadline that stops the search where it stands."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import torch

from ..solvers import ProgressHook, SolveResult, TimeUp

ProgressCallback = Callable[[dict[str, Any]], None]

#: Minimum seconds between two progress reports within a phase.
REPORT_INTERVAL = 0.2


class Reporter:
    """Turns solver hooks into the progress dicts of the public callback, throttled in time.

    Parameters
    ----------
    callback : callable or None
        The caller's progress callback.
    n_total : int
        Initial states of the whole search (every request of a batch).
    time_limit_s : float, optional
        Seconds from now the search may take.
    """

    def __init__(self, callback: ProgressCallback | None, n_total: int, time_limit_s: float | None = None) -> None:
        self.callback = callback
        self.n_total = n_total
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s
        self.n_converged_before = 0
        self.last = float("-inf")
        #: Why the search was stopped early (the time limit), or None.
        self.stopped: str | None = None

    def hook(self, phase: str) -> ProgressHook | None:
        """A solver progress hook for ``phase``.

        It raises :class:`TimeUp` once the deadline has passed (or the callback raised it),
        and remembers why in :attr:`stopped`.
        """
        if self.callback is None and self.deadline is None:
            return None

        def report(iteration: int, q: torch.Tensor, n_converged: int) -> None:
            try:
                if self.stopped is not None:
                    raise TimeUp(self.stopped)
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    raise TimeUp(f"the time limit ran out during the {phase} phase, at iteration {iteration}")
                self.report(phase, iteration, q, self.n_converged_before + n_converged)
            except TimeUp as stop:
                self.stopped = str(stop) or f"stopped by the progress callback during the {phase} phase"
                raise

        return report

    def finish_chunk(self, n_converged: int) -> None:
        self.n_converged_before += n_converged

    def announce(self, phase: str, result: SolveResult) -> None:
        """Report the start of a phase that runs to its end, on the samples of ``result``: a TimeUp
        of the callback is ignored here."""
        with contextlib.suppress(TimeUp):
            self.report(phase, result.iterations, result.q, int(result.converged.sum()), force=True)

    def report(self, phase: str, iteration: int, q: torch.Tensor, n_converged: int, force: bool = False) -> None:
        now = time.perf_counter()
        if self.callback is None or (not force and now - self.last < REPORT_INTERVAL):
            return
        self.last = now
        finite = q[torch.isfinite(q)]
        self.callback(
            {
                "phase": phase,
                "iteration": int(iteration),
                "n_total": self.n_total,
                "n_converged": int(n_converged),
                "q_median": float(finite.median()) if finite.numel() else float("nan"),
                "q_max": float(finite.max()) if finite.numel() else float("nan"),
            }
        )
