"""The worker's handle on its sandboxed children (real bwrap processes, no Redis or HTTP): a child
answers like the engine in-process, errors keep it, anything else kills it, a pool keeps one
warm child per tenant with a spare ready, and a job's time limits count from its ready child."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from model_steps import EndlessStep

from fpf_client.errors import FpfError
from fpf_client.fixed_points import FixedPoints
from fpf_client.options import FinderOptions
from service.core.records import Model, ModelStatus
from workers.engine import find_fixed_points, load_model
from workers.results import MalformedResult, ResultFile
from workers.runner import RunLimits, SandboxedModels
from workers.sandbox import Limits, RequestTimedOut, Sandbox, SandboxFailure, SandboxPool
from workers.sandbox.process import START_TIMEOUT_S, _descendants

pytestmark = pytest.mark.integration

LIMITS = Limits(memory_bytes=2 << 30, cpu_s=30, disk_bytes=64 << 20)
OPTIONS = {"method": "auto", "random_seed": 0}


class TanhRNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(3)
        self.W = torch.nn.Parameter(1.2 * torch.randn(8, 8, generator=generator) / 8**0.5)
        self.B = torch.nn.Parameter(torch.randn(8, 2, generator=generator))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.W.T + u @ self.B.T)


class Follow:
    """A listener that records reports and, when told, stops the job at the first one."""

    def __init__(self, stop: bool = False) -> None:
        self.reports: list[dict[str, Any]] = []
        self.stop = stop

    def progress(self, report: dict[str, Any]) -> None:
        self.reports.append(report)
        if self.stop:
            raise KeyboardInterrupt("stop")  # anything the worker raises, as StopJob does

    def idle(self) -> None:
        pass


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes, Path]:
    path = tmp_path_factory.mktemp("model") / "tanh.pt"
    torch.jit.script(TanhRNN()).save(str(path))
    data = path.read_bytes()
    record = {
        "id": hashlib.sha256(data).hexdigest(),
        "format": "torchscript",
        "n_states": None,
        "n_inputs": None,
        "dynamics": "discrete",
    }
    return record, data, path


@pytest.fixture
def sandbox(tmp_path: Path):
    box = Sandbox(LIMITS, data_dir=tmp_path / "data")
    yield box
    box.kill()


def arrays(n: int = 32) -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(1)
    np.savez(out, initial_states=rng.normal(size=(n, 8)), inputs=np.zeros((1, 2)))
    return out.getvalue()


def test_a_child_describes_and_solves_like_the_engine_in_process(sandbox, model_file):
    record, data, path = model_file
    fetched: list[str] = []

    def model_bytes() -> bytes:
        fetched.append(record["id"])
        return data

    described = sandbox.describe(record, model_bytes)
    follow = Follow()
    result, engine_s = sandbox.solve(record, model_bytes, arrays(), OPTIONS, follow)

    assert described == {"format": "torchscript", "n_states": 8, "n_inputs": 2, "dynamics": "discrete"}
    assert fetched == [record["id"]]  # sent once, then kept loaded in the child
    assert engine_s > 0 and follow.reports and follow.reports[-1]["n_total"] == 32
    with np.load(io.BytesIO(arrays()), allow_pickle=False) as given:
        expected = find_fixed_points(
            load_model(path), given["initial_states"], given["inputs"], FinderOptions.model_validate(OPTIONS)
        )
    got = FixedPoints.load(result)
    assert got.n == expected.n
    np.testing.assert_allclose(got.xstar, expected.xstar, atol=1e-6)


def test_a_model_error_is_reported_and_the_child_kept(sandbox, model_file):
    record, data, _ = model_file
    with pytest.raises(FpfError, match="invalid_model|not .*TorchScript|step contract"):
        sandbox.describe({**record, "id": "0" * 64}, lambda: b"not a model")
    assert sandbox.alive
    assert sandbox.describe(record, lambda: data)["n_states"] == 8


def test_stopping_a_job_kills_the_child_and_everything_in_it(sandbox, model_file):
    record, data, _ = model_file
    sandbox.wait_ready()
    inside = _descendants(sandbox._init_pid)

    with pytest.raises(KeyboardInterrupt):
        sandbox.solve(record, lambda: data, arrays(), {"method": "adam", "max_iters": 100000}, Follow(stop=True))

    assert not sandbox.alive  # and, once kill() returns, no process of the sandbox is left:
    assert [pid for pid in inside if Path(f"/proc/{pid}").exists()] == []


def test_a_child_killed_from_outside_is_reported_not_hung(sandbox, model_file):
    record, data, _ = model_file
    sandbox.wait_ready()
    python = _descendants(sandbox._init_pid)[1]
    os.kill(python, signal.SIGKILL)  # as the kernel's OOM killer would

    with pytest.raises(SandboxFailure, match="was killed"):
        sandbox.describe(record, lambda: data)
    assert not sandbox.alive


def test_the_cpu_time_limit_kills_a_busy_child(tmp_path, model_file):
    record, data, _ = model_file
    box = Sandbox(Limits(memory_bytes=2 << 30, cpu_s=0.5, disk_bytes=64 << 20), data_dir=tmp_path)
    try:
        with pytest.raises(SandboxFailure, match="CPU-time limit of 0.5 s") as failure:
            box.solve(
                record,
                lambda: data,
                arrays(1024),
                {"method": "adam", "adam": {"lr_init": 1e-4}, "max_iters": 10**6},
                Follow(),
            )
        assert failure.value.extra == {"limit": "cpu_time"}
        assert not box.alive
    finally:
        box.kill()


def test_a_pool_keeps_a_child_per_tenant_and_switches_to_a_warm_spare(tmp_path, model_file):
    record, data, _ = model_file
    pool = SandboxPool(LIMITS, data_dir=tmp_path, spare=True, warm_owners=1)
    try:
        first = pool.get("lab-a")
        first.describe(record, lambda: data)
        assert pool.get("lab-a") is first
        pool._spare.wait_ready()  # started with the first child; a worker runs jobs meanwhile

        started = time.monotonic()
        second = pool.get("lab-b")
        second.describe(record, lambda: data)
        switch_s = time.monotonic() - started

        assert second is not first and not first.alive
        assert switch_s < 1.0, switch_s  # no Python/torch start on the way
        assert pool._spare is not None and pool._spare is not second
    finally:
        pool.close()
    assert not second.alive


def test_a_pool_keeps_the_children_of_its_last_owners_warm(tmp_path, model_file):
    """Two owners taking turns keep their children; a third closes the least recently served one's."""
    record, data, _ = model_file
    pool = SandboxPool(LIMITS, data_dir=tmp_path, spare=False, warm_owners=2)
    try:
        a = pool.get("lab-a")
        a.describe(record, lambda: data)
        b = pool.get("lab-b")
        assert b is not a and a.alive
        assert pool.get("lab-a") is a  # lab-b is now the least recently served
        c = pool.get("lab-c")
        assert c not in (a, b) and a.alive and not b.alive
        a.kill()  # a child that died (a cancel, a limit) is replaced at its owner's next request
        again = pool.get("lab-a")
        assert again is not a and again.alive and c.alive
        again.describe(record, lambda: data)
    finally:
        pool.close()
    assert not (again.alive or c.alive)


class SlowToStart(Sandbox):
    """A child whose start takes ``START_DELAY_S`` longer, as a cold start on a busy machine does."""

    START_DELAY_S = 5.0

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        if not self._ready:
            time.sleep(self.START_DELAY_S)
        super().wait_ready(timeout_s)


class OneChild:
    """The pool's part SandboxedModels uses: one child for every owner."""

    def __init__(self, child: Sandbox) -> None:
        self.child = child

    def get(self, owner: str) -> Sandbox:
        return self.child


class Batch:
    """A batch's listener that follows nothing."""

    def progress(self, report: dict[str, Any], job: int | None) -> None:
        pass

    def idle(self) -> None:
        pass


def _solve_in(child: Sandbox, path: Path, arrays_npzs: list[bytes], limits: RunLimits, **options: Any):
    """The outcomes of one batch of jobs (their arrays files' bytes) run by SandboxedModels in ``child``."""
    data = path.read_bytes()
    record = Model(
        id=hashlib.sha256(data).hexdigest(),
        status=ModelStatus.READY,
        size_bytes=len(data),
        created_at=time.time(),
        format="torchscript",
        n_states=8,
        n_inputs=2,
    )
    arrays_paths = [path.parent / f"arrays-{time.monotonic_ns()}-{i}.npz" for i in range(len(arrays_npzs))]
    for arrays_path, arrays_npz in zip(arrays_paths, arrays_npzs, strict=True):
        arrays_path.write_bytes(arrays_npz)
    models = SandboxedModels(OneChild(child))  # type: ignore[arg-type]
    return models.solve(record, path, arrays_paths, FinderOptions.model_validate(options), Batch(), limits)


def test_a_jobs_time_limits_do_not_count_its_sandboxs_start(tmp_path, model_file):
    _, _, path = model_file
    child = SlowToStart(LIMITS, data_dir=tmp_path / "data")
    limits = RunLimits(soft_s=SlowToStart.START_DELAY_S - 1, hard_s=SlowToStart.START_DELAY_S, max_result_bytes=2**30)
    try:
        started = time.monotonic()
        [result], _ = _solve_in(child, path, [arrays()], limits, **OPTIONS)
        elapsed_s = time.monotonic() - started
    finally:
        child.kill()
    assert elapsed_s > limits.hard_s  # had the start counted, the run would have failed at the hard limit
    assert isinstance(result, ResultFile) and not result.partial, result
    assert FixedPoints.load(result.npz).n > 0


def test_the_hard_limit_ends_a_run_and_kills_its_sandbox(tmp_path):
    path = tmp_path / "endless.pt"
    torch.jit.script(EndlessStep()).save(str(path))
    child = Sandbox(LIMITS, data_dir=tmp_path / "data")
    limits = RunLimits(soft_s=0.5, hard_s=2.0, max_result_bytes=2**30)
    try:
        child.wait_ready()
        started = time.monotonic()
        with pytest.raises(RequestTimedOut):
            _solve_in(child, path, [arrays(64)], limits, method="auto", max_iters=3)
        elapsed_s = time.monotonic() - started
        assert not child.alive
    finally:
        child.kill()
    assert limits.hard_s <= elapsed_s < limits.hard_s + 5


class Tampering(Sandbox):
    """A real child whose result for the batch's last job comes back with one more member, as a child
    taken over by its model could send it."""

    def solve_batch(self, *args: Any, **kwargs: Any) -> tuple[list[memoryview | FpfError], float]:
        outcomes, engine_s = super().solve_batch(*args, **kwargs)
        archive = io.BytesIO(bytes(outcomes[-1]))
        with zipfile.ZipFile(archive, "a") as extended:
            extended.writestr("payload.npy", b"anything")
        return [*outcomes[:-1], archive.getbuffer()], engine_s


def test_a_result_the_engine_does_not_write_fails_its_own_job_only(tmp_path, model_file):
    _, _, path = model_file
    child = Tampering(LIMITS, data_dir=tmp_path / "data")
    limits = RunLimits(soft_s=60, hard_s=120, max_result_bytes=2**30)
    try:
        (kept, refused), _ = _solve_in(child, path, [arrays(), arrays(16)], limits, **OPTIONS)
    finally:
        child.kill()
    assert isinstance(kept, ResultFile) and FixedPoints.load(kept.npz).n > 0
    assert isinstance(refused, MalformedResult) and "payload.npy" in refused.detail, refused
