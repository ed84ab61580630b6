"""Choosing, per model, the fastest of several ways to compute the same derivative.

No way is best for every model: vmap over the backward pass beats d backward passes
on an LSTM and loses on a GRU cell (no batching rule for its fused backward); forward
mode fails inside some TorchScript ops. A :class:`PathChoice` checks each candidate
once against a trusted reference, and at the first call on a realistic batch times
the ones that agree and keeps the fastest. Small batches (the dry run) only check.
A path that wins by a wide margin wherever it applies (the closed-form Jacobians)
is declared ``decisive`` and taken once it is correct,
which spares the first large call the timing of the slow paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

import torch

T = TypeVar("T")

TUNE_MIN_BATCH = 128


class PathChoice(Generic[T]):
    """The choice among ``candidates`` and a trusted ``reference`` path, made once.

    Parameters
    ----------
    candidates : paths to try, fastest expected first (used at small batches once checked).
    reference : the path that always works and is trusted; kept when no candidate agrees.
    decisive : candidates taken without timing once they agree with the reference.
    """

    def __init__(self, candidates: tuple[str, ...], reference: str, decisive: tuple[str, ...] = ()) -> None:
        self.candidates = candidates
        self.reference = reference
        self.decisive = decisive
        self.correct: list[str] | None = None
        self.chosen: str | None = None

    def copy(self) -> PathChoice[T]:
        """A choice that starts from what this one has found so far."""
        twin: PathChoice[T] = PathChoice(self.candidates, self.reference, self.decisive)
        twin.correct = list(self.correct) if self.correct is not None else None
        twin.chosen = self.chosen
        return twin

    def run(
        self,
        compute: Callable[[str], T],
        agree: Callable[[T, T], bool],
        *,
        batch: int,
        device: torch.device,
    ) -> T:
        """``compute(path)`` by the chosen path, choosing it first when needed.

        ``compute`` must be repeatable (e.g. a backward pass with ``retain_graph=True``).
        """
        if self.chosen is not None:
            return compute(self.chosen)
        if self.correct is None:
            reference = compute(self.reference)
            self.correct = [path for path in self.candidates if _agrees(compute, path, reference, agree)]
            self.correct.append(self.reference)
            if len(self.correct) == 1 or self.correct[0] in self.decisive:
                self.chosen = self.correct[0]
            if self.chosen is not None or batch < TUNE_MIN_BATCH:
                return reference
        elif batch < TUNE_MIN_BATCH:
            return compute(self.correct[0])
        best: tuple[float, T] | None = None
        for path in self.correct:
            seconds, result = _timed(compute, path, device)
            if best is None or seconds < best[0]:
                best, self.chosen = (seconds, result), path
        assert best is not None
        return best[1]


def _agrees(compute: Callable[[str], T], path: str, reference: T, agree: Callable[[T, T], bool]) -> bool:
    try:
        return agree(compute(path), reference)
    except Exception:
        return False


def _timed(compute: Callable[[str], T], path: str, device: torch.device) -> tuple[float, T]:
    """Seconds and result of ``compute(path)``: this process's CPU time on the CPU (other
    processes on a shared machine do not skew it), wall time after a sync on a GPU."""
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    _synchronize(device)
    start = clock()
    result = compute(path)
    _synchronize(device)
    return clock() - start, result


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
