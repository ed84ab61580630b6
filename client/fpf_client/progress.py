"""Show a job's progress: a tqdm bar of converged initial states, or a callback of the user's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from .records import JobRecord

#: Converged initial states out of all, elapsed time, then the phase (or status) and the median q.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n}/{total} converged [{elapsed}{postfix}]"

#: ``True`` for a bar (shown only when stderr is a terminal), ``False`` for nothing, or a callable.
ProgressArg = bool | Callable[[JobRecord], Any]


class ProgressReporter:
    """Called with each new :class:`JobRecord` while a job is followed; a context manager closing the bar."""

    def __init__(self, progress: ProgressArg, job_id: str) -> None:
        self._callback = progress if callable(progress) else None
        self._job_id = job_id
        self._show_bar = progress is True
        self._bar: tqdm | None = None

    def __call__(self, record: JobRecord) -> None:
        if self._callback is not None:
            self._callback(record)
        if self._show_bar:
            self._update_bar(record)

    def note(self, message: str) -> None:
        """Show what the wait is waiting for (an outage of the service) until the next record."""
        if self._bar is not None:
            self._bar.set_postfix_str(message, refresh=True)

    def _update_bar(self, record: JobRecord) -> None:
        progress = record.progress
        total = (progress.n_total if progress else None) or record.n_initial_states
        if self._bar is None:
            # disable=None: draw only on a terminal, so logs and CI output stay clean.
            self._bar = tqdm(total=total, desc=f"job {self._job_id[:8]}", bar_format=BAR_FORMAT, disable=None)
        if total and self._bar.total != total:
            self._bar.total = total
        postfix = record.status
        if progress is not None:
            if progress.n_converged is not None:
                self._bar.n = progress.n_converged
            if progress.phase and record.status == "running":
                postfix = progress.phase
            if progress.q_median is not None:
                postfix += f", q median {progress.q_median:.1e}"
        self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.refresh()

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.close()
