"""The engine's time limit: solvers stop where they stand on TimeUp, and find_fixed_points returns
what it found as a partial result; chunk sizes respect the process's RLIMIT_DATA."""

from __future__ import annotations

import resource
from functools import partial

import numpy as np
import pytest
import torch
from test_solvers import Tanh, grid, roll_weights, same_set, true_roots

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points
from workers.engine.finder import _free_memory, auto_chunk_size
from workers.engine.solvers import SOLVERS, Problem, Status, TimeUp, get_solver
from workers.engine.solvers.methods.anderson import solve_anderson
from workers.engine.solvers.methods.lm import SMALL_MAX_STATES

torch.set_num_threads(1)

#: Iteration from which a solver's hook raises TimeUp: 3, or 20 for Adam (it reports every 20 iterations).
STOP_AT = {"adam": 20}


def _stop_at(iteration_to_stop: int):
    """A solver hook that raises TimeUp at ``iteration_to_stop``."""

    def hook(iteration: int, q: torch.Tensor, n_done: int) -> None:
        if iteration >= iteration_to_stop:
            raise TimeUp("test")

    return hook


@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_a_solver_stopped_by_time_up_returns_its_states_as_an_iteration_cap_would(method):
    """Stopping at the first report from iteration k on gives exactly the states of a run capped there."""
    problem = Problem(Tanh(roll_weights(4)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.as_tensor(grid(4) * 0.7 + 0.05)
    k = STOP_AT.get(method, 3)
    options = FinderOptions(method=method, tol_q=1e-30, adam={"lr_init": 0.05})
    # lm's mixing takes half of a small max_iters, so a cap splits its steps differently from a
    # stop: its LM steps are compared here, its mixing phase in the next test
    solver = partial(get_solver(method), warm_start=False) if method == "lm" else get_solver(method)
    stopped = solver(problem, x0, options, progress=_stop_at(k))
    assert stopped.iterations >= k
    capped = solver(problem, x0, options.model_copy(update={"max_iters": stopped.iterations}))
    torch.testing.assert_close(stopped.x, capped.x, rtol=0, atol=0)
    torch.testing.assert_close(stopped.q, capped.q, rtol=0, atol=0)
    assert torch.equal(stopped.status, capped.status)
    assert (stopped.status == Status.CAPPED).any()


def test_newton_stopped_while_mixing_returns_the_mixing_states():
    problem = Problem(Tanh(roll_weights(4)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.as_tensor(grid(4) * 0.7 + 0.05)
    options = FinderOptions(tol_q=1e-30)
    stopped = get_solver("lm")(problem, x0, options, progress=_stop_at(3))
    assert 3 <= stopped.iterations < 20  # inside the mixing phase
    assert x0.shape[1] <= SMALL_MAX_STATES  # newton mixes with a memory of one here
    mixing = solve_anderson(problem, x0, options, max_iters=stopped.iterations, memory=1)
    torch.testing.assert_close(stopped.x, mixing.x, rtol=0, atol=0)
    assert torch.equal(stopped.status, mixing.status) and (stopped.status == Status.CAPPED).any()


def test_a_time_limit_of_zero_gives_a_partial_result_of_true_roots_only():
    W = roll_weights(4)
    fps = find_fixed_points(Tanh(W), grid(4), dtype="float64", device="cpu", time_limit_s=0.0, q_slow=1e-2)
    info = fps.info
    assert info["partial"] is True and "time limit" in info["partial_reason"]
    assert info["completeness_passes"] == 0  # no restarts (the default for newton) once time is up
    assert info["n_converged"] + info["n_stalled"] + info["n_capped"] == 81 and info["n_capped"] > 0
    assert (fps.qstar < fps.tol_q).all()
    truth = true_roots(W)
    for x in fps.xstar:  # every point reported is a true root (a subset of them)
        assert np.abs(truth - x).max(axis=1).min() < 1e-6
    assert fps.slow_points is not None and (fps.slow_points.qstar >= fps.tol_q).all()


def test_without_a_time_limit_the_result_is_complete():
    W = roll_weights(4)
    fps = find_fixed_points(Tanh(W), grid(4), dtype="float64", device="cpu", time_limit_s=600.0)
    assert fps.info["partial"] is False and fps.info["partial_reason"] is None
    assert same_set(fps.xstar, true_roots(W))


def test_time_up_from_the_progress_callback_stops_later_chunks_unstarted():
    calls = []

    def callback(report):
        calls.append(report)
        raise TimeUp("the job's budget is spent")

    fps = find_fixed_points(
        Tanh(roll_weights(3)),
        np.tile(grid(3), (4, 1)),
        dtype="float64",
        device="cpu",
        method="adam",
        batch_size=27,
        progress=callback,
    )
    assert fps.info["partial"] is True and fps.info["partial_reason"] == "the job's budget is spent"
    assert fps.info["n_capped"] + fps.info["n_stalled"] + fps.info["n_converged"] == 108
    assert fps.info["iterations"] == 20  # the first chunk stopped at its first report, the others never ran
    assert [c["phase"] for c in calls] == ["solve", "analysis"]  # the analysis of what was found still runs


def test_other_exceptions_of_the_callback_still_propagate():
    class Cancelled(Exception):
        pass

    def cancel(report):
        raise Cancelled

    with pytest.raises(Cancelled):
        find_fixed_points(Tanh(roll_weights(3)), grid(3), device="cpu", progress=cancel, time_limit_s=600.0)


def test_host_chunks_are_bounded_by_the_data_limit():
    """Inside the model sandbox RLIMIT_DATA, not the host's free memory, bounds a chunk."""
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cpu = torch.device("cpu")
    unbounded = _free_memory(cpu)
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
    headroom = 64 * 2**20
    assert unbounded > 4 * headroom  # the host has more to offer than the limit will
    resource.setrlimit(resource.RLIMIT_DATA, (used + headroom, hard))
    try:
        bounded = _free_memory(cpu)
        chunk = auto_chunk_size(64, 4, torch.float32, cpu, "lm")
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    assert 0.5 * headroom < bounded <= headroom
    per_sample = 4 * (8 * 64 * 64 + 32 * 64 + 4 * 4)
    assert chunk == int(0.25 * bounded // per_sample)
    assert auto_chunk_size(64, 4, torch.float32, cpu, "lm") > chunk


@pytest.mark.parametrize(
    "method, d, expected",
    [
        ("anderson", 64, (64 << 20) // (4 * (32 * 64 + 4 * 4))),  # 8,176 samples of 8 KiB
        ("lm", 64, 1024),  # 139 KiB a sample: the floor, not 482
        ("lm", 4, (64 << 20) // (4 * (8 * 16 + 32 * 4 + 4 * 4))),
    ],
)
def test_host_chunks_keep_their_working_set_near_the_allocators_reuse(method, d, expected):
    """With memory to spare, a host chunk is sized by HOST_CHUNK_BYTES (and HOST_MIN_CHUNK), not by
    free memory; Adam's chunk is its problem (the mean q), so it stays as large as memory allows."""
    cpu = torch.device("cpu")
    assert _free_memory(cpu) > 4 * 65536 * 4 * (32 * 64 + 4 * 4)  # room for a whole Adam chunk
    assert auto_chunk_size(d, 4, torch.float32, cpu, method) == expected
    assert auto_chunk_size(d, 4, torch.float32, cpu, "adam") == 65536
