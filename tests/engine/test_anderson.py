"""Anderson mixing against exact answers: a linear contraction, a map without roots, the roll networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh, grid, roll_weights, same_set, true_roots

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points
from workers.engine.solvers import Problem, Status, get_solver
from workers.engine.solvers.methods.anderson import CHECK_EVERY, CHECK_EVERY_SINGLE, RATE_MIN_STEPS

torch.set_num_threads(1)
solve = get_solver("anderson")


def first_rate_check(check_every: int) -> int:
    """Samples are judged at host checks: the first one from RATE_MIN_STEPS on."""
    return -(-RATE_MIN_STEPS // check_every) * check_every


@pytest.mark.parametrize(
    "memory, speedup", [(FinderOptions().anderson.memory, 4), (1, 2)]
)  # Anderson(1): a division per sample
def test_a_linear_contraction_converges_to_its_root_much_faster_than_the_plain_iteration(memory, speedup):
    rng = np.random.default_rng(1)
    d, rate = 40, 0.95
    A = rng.standard_normal((d, d))
    A *= rate / np.abs(np.linalg.eigvals(A)).max()
    b = rng.standard_normal(d)
    x_true = np.linalg.solve(np.eye(d) - A, b)
    problem = Problem(Linear(A, b=b), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.as_tensor(rng.standard_normal((6, d)))
    before = x0.clone()
    result = solve(problem, x0, FinderOptions(tol_q=1e-20, anderson={"memory": memory}))
    assert (result.status == Status.CONVERGED).all()
    assert torch.equal(x0, before), "x0 must not be modified"
    bound = np.linalg.norm(np.linalg.inv(A - np.eye(d)), 2) * np.sqrt(2e-20)
    assert np.linalg.norm(result.x.numpy() - x_true, axis=1).max() <= bound
    plain = np.log(1e-10 / np.linalg.norm(x0.numpy() - x_true, axis=1).max()) / np.log(rate)
    assert result.n_iters.max() < plain / speedup, (int(result.n_iters.max()), plain)
    G = problem.residual(result.x)
    np.testing.assert_allclose(result.q.numpy(), 0.5 * (G * G).sum(-1).numpy(), rtol=1e-3)


def test_stalls_at_its_best_point_where_there_is_no_root():
    class Ghost(Linear):  # G = 0.1 + h^2 > 0: no root; the plain iteration runs away
        def step(self, h, u):
            return h + 0.1 + h * h

    problem = Problem(Ghost(np.eye(1)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.tensor([[0.8], [-1.5], [3.0]], dtype=torch.float64)
    result = solve(problem, x0, FinderOptions())
    assert (result.status == Status.STALLED).all()
    assert (result.q > FinderOptions().tol_q).all()
    G = problem.residual(result.x)
    torch.testing.assert_close(result.q, 0.5 * (G * G).sum(-1))  # q belongs to the returned point
    assert (result.q <= 0.5 * problem.residual(x0).pow(2).sum(-1)).all()  # never worse than the start


@pytest.mark.slow
def test_finds_only_true_roots_of_the_roll_networks():
    for n in (2, 3, 4):
        W = roll_weights(n)
        fps = find_fixed_points(Tanh(W), grid(n), method="anderson", dtype="float64", device="cpu")
        truth = true_roots(W)
        assert fps.n >= 1
        assert same_set(fps.xstar, truth[[np.abs(truth - x).max(axis=1).argmin() for x in fps.xstar]])
        assert (fps.qstar < FinderOptions().tol_q).all()


def test_max_iters_caps_and_says_so():
    problem = Problem(Tanh(roll_weights(4)), torch.zeros(1, 1, dtype=torch.float64))
    result = solve(problem, torch.tensor(grid(4)[:8]), FinderOptions(max_iters=2))
    assert set(result.status.tolist()) <= {Status.CONVERGED, Status.CAPPED}
    assert (result.status == Status.CAPPED).any()


def test_hand_over_slow_ends_samples_that_would_not_converge_in_the_steps_left():
    """A warm start hands samples on early, as capped at their best points, when their q falls too
    slowly: slower than MIN_DECADES_PER_STEP decades a step, or too slowly to reach tol_q by the cap."""

    class Ghost(Linear):  # G = 0.1 + h^2 > 0: no root; q falls half a decade to its minimum at 0
        def step(self, h, u):
            return h + 0.1 + h * h

    problem = Problem(Ghost(np.eye(1)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.tensor([[0.3], [-0.3]], dtype=torch.float64)
    slow = solve(problem, x0, FinderOptions(), max_iters=300, memory=1, hand_over_slow=True)
    assert (slow.status == Status.CAPPED).all() and (slow.n_iters == first_rate_check(CHECK_EVERY_SINGLE)).all()
    G = problem.residual(slow.x)
    torch.testing.assert_close(slow.q, 0.5 * (G * G).sum(-1))  # at its best point
    patient = solve(problem, x0, FinderOptions(), max_iters=300, memory=1)
    assert (patient.status == Status.STALLED).all() and (patient.n_iters > RATE_MIN_STEPS).all()

    rng = np.random.default_rng(1)  # a root, reached at ~0.15 decades a step: not within 20 steps
    d = 40
    A = rng.standard_normal((d, d))
    A *= 0.999 / np.abs(np.linalg.eigvals(A)).max()
    problem = Problem(Linear(A, b=rng.standard_normal(d)), torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.as_tensor(rng.standard_normal((4, d)))
    options = FinderOptions(tol_q=1e-20)
    early = solve(problem, x0, options, max_iters=20, hand_over_slow=True)
    assert (early.status == Status.CAPPED).all() and (early.n_iters == first_rate_check(CHECK_EVERY)).all()
    full = solve(problem, x0, options, max_iters=300, hand_over_slow=True)
    assert (full.status == Status.CONVERGED).all()  # the same rate is fast enough for 300 steps
