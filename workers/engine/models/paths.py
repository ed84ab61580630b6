"""Choosing, per model, the fastest of several ways to compute the same derivative.

No way is best for every model: vmap over the backward pass beats d backward passes
on an LSTM and loses on a GRU cell (no batching rule for its fused backward); forward
mode fails inside some TorchScript ops. A :class:`PathChoice` checks each candidate
once against a trusted reference, and at the first call on a realistic batch times
the ones that agree and keeps the fastest. Small batches (the dry run) only check.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, TypeVar

import torch

T = TypeVar("T")

TUNE_MIN_BATCH = 128


class PathChoice(Generic[T]):
    """The choice among ``candidates`` and a trusted ``reference`` path, made once.

    Parameters
    ----------
    candidates : paths to try, fastest expected first (used at small batches once checked).
    reference : the path that always works and is trusted; kept when no candidate agrees.
    """

    def __init__(self, candidates: tuple[str, ...], reference: str) -> None:
        self.candidates = candidates
        self.reference = reference
        self.correct: list[str] | None = None
        self.chosen: str | None = None

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
            if len(self.correct) == 1:
                self.chosen = self.reference
            if len(self.correct) == 1 or batch < TUNE_MIN_BATCH:
                return reference
        elif batch < TUNE_MIN_BATCH:
            return compute(self.correct[0])
        seconds = {path: _timed(compute, path, device) for path in self.correct}
        self.chosen = min(seconds, key=seconds.__getitem__)
        return compute(self.chosen)


def _agrees(compute: Callable[[str], T], path: str, reference: T, agree: Callable[[T, T], bool]) -> bool:
    try:
        return agree(compute(path), reference)
    except Exception:  # noqa: BLE001 - a path that raises on this model is not used for it
        return False


def _timed(compute: Callable[[str], object], path: str, device: torch.device) -> float:
    _synchronize(device)
    start = time.perf_counter()
    compute(path)
    _synchronize(device)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
