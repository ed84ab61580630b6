"""PathChoice: a path is used only after it agreed with the reference, and the faster one is kept."""

from __future__ import annotations

import time

import torch

from workers.engine.models.derivative_paths import TUNE_MIN_BATCH, PathChoice

CPU = torch.device("cpu")
BIG, SMALL = TUNE_MIN_BATCH, 2


def _paths(calls: list[str], slow: str | None = None):
    values = {"reference": 1.0, "good": 1.0, "wrong": 2.0}

    def compute(path: str) -> float:
        calls.append(path)
        if path == "raises":
            raise RuntimeError("no batching rule")
        if path == slow:  # busy, not asleep: the choice measures CPU time
            start = time.process_time()
            while time.process_time() - start < 0.05:
                pass
        return values[path]

    return compute


def _agree(a: float, b: float) -> bool:
    return a == b


def test_wrong_and_failing_candidates_are_never_used() -> None:
    calls: list[str] = []
    choice: PathChoice[float] = PathChoice(("raises", "wrong"), reference="reference")
    assert choice.run(_paths(calls), _agree, batch=SMALL, device=CPU) == 1.0
    assert choice.chosen == "reference"
    calls.clear()
    assert choice.run(_paths(calls), _agree, batch=BIG, device=CPU) == 1.0
    assert calls == ["reference"]


def test_small_batches_check_but_do_not_choose() -> None:
    calls: list[str] = []
    choice: PathChoice[float] = PathChoice(("good",), reference="reference")
    choice.run(_paths(calls), _agree, batch=SMALL, device=CPU)
    assert (calls, choice.chosen) == (["reference", "good"], None)
    calls.clear()
    choice.run(_paths(calls), _agree, batch=SMALL, device=CPU)
    assert calls == ["good"]


def test_the_faster_correct_path_is_kept() -> None:
    for slow, expected in (("good", "reference"), ("reference", "good")):
        calls: list[str] = []
        choice: PathChoice[float] = PathChoice(("good",), reference="reference")
        choice.run(_paths(calls, slow=slow), _agree, batch=BIG, device=CPU)
        assert choice.chosen == expected
        calls.clear()
        choice.run(_paths(calls, slow=slow), _agree, batch=BIG, device=CPU)
        assert calls == [expected]


def test_a_decisive_path_is_taken_without_timing() -> None:
    calls: list[str] = []
    choice: PathChoice[float] = PathChoice(("good",), reference="reference", decisive=("good",))
    choice.run(_paths(calls), _agree, batch=SMALL, device=CPU)
    assert choice.chosen == "good"
    calls.clear()
    choice.run(_paths(calls), _agree, batch=BIG, device=CPU)
    assert calls == ["good"]
