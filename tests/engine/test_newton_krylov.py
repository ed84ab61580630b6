"""Matrix-free Newton-Krylov against ground truth: float64 roots of the roll networks, linear
systems with exact answers, a residual without roots, and dense Newton on a larger network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh, grid, roll_weights, same_set, true_roots

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points
from workers.engine.solvers import Problem, Status, get_solver

torch.set_num_threads(1)
solve = get_solver("newton_krylov")


@pytest.mark.parametrize("n", [2, 3, 4])
def test_finds_exactly_the_true_roots_of_the_roll_networks(n):
    W = roll_weights(n)
    fps = find_fixed_points(Tanh(W), grid(n), method="newton_krylov", dtype="float64", device="cpu")
    assert same_set(fps.xstar, true_roots(W)), (fps.xstar, true_roots(W))
    assert fps.certified.all()
    assert fps.info["method"] == "newton_krylov"


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_a_linear_system_is_solved_in_a_few_inexact_newton_steps(dynamics):
    rng = np.random.default_rng(3)
    d = 12
    A = 0.6 * rng.standard_normal((d, d)) / np.sqrt(d) - (0.0 if dynamics == "discrete" else np.eye(d))
    b = rng.standard_normal(d)
    x_true = np.linalg.solve(np.eye(d) - A, b) if dynamics == "discrete" else -np.linalg.solve(A, b)
    problem = Problem(Linear(A, b=b, dynamics=dynamics), torch.zeros(1, 1, dtype=torch.float64), dynamics)
    x0 = torch.as_tensor(rng.standard_normal((5, d)))
    result = solve(problem, x0, FinderOptions())
    assert (result.status == Status.CONVERGED).all()
    assert result.n_iters.max() <= 6  # the forcing terms tighten each solve: superlinear, not one step
    np.testing.assert_allclose(result.x.numpy(), np.broadcast_to(x_true, (5, d)), atol=1e-6)


def test_stalls_honestly_at_a_minimum_of_q_that_is_not_a_root():
    class Ghost(Linear):  # G = 0.1 + h^2: no root; q is smallest at h = 0
        def step(self, h, u):
            return h + 0.1 + h * h

    problem = Problem(Ghost(np.eye(1)), torch.zeros(1, 1, dtype=torch.float64))
    result = solve(problem, torch.tensor([[0.8], [-1.5]], dtype=torch.float64), FinderOptions())
    assert (result.status == Status.STALLED).all()
    assert torch.allclose(result.x, torch.zeros_like(result.x), atol=1e-3)
    assert result.n_iters.max() < 100


def test_max_iters_caps_and_says_so():
    problem = Problem(Tanh(roll_weights(4)), torch.zeros(1, 1, dtype=torch.float64))
    result = solve(problem, torch.tensor(grid(4)[:8]), FinderOptions(max_iters=1))
    assert set(result.status.tolist()) <= {Status.CONVERGED, Status.CAPPED}
    assert (result.status == Status.CAPPED).any()


def test_agrees_with_dense_newton_on_a_random_64_unit_network():
    generator = torch.Generator().manual_seed(5)
    model = Tanh(
        0.9 * torch.randn(64, 64, generator=generator, dtype=torch.float64) / 8,
        b=0.3 * torch.randn(64, generator=generator, dtype=torch.float64),
    )
    x0 = torch.randn(64, 64, generator=generator, dtype=torch.float64)
    before = x0.clone()
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    options = FinderOptions(tol_q=1e-24)
    dense = get_solver("lm")(problem, x0, options)
    krylov = solve(problem, x0, options)
    assert krylov.converged.all() and dense.converged.all()
    torch.testing.assert_close(krylov.x, dense.x, rtol=0, atol=1e-10)
    assert torch.equal(x0, before), "x0 must not be modified"


def test_newton_runs_matrix_free_lm_for_large_networks():
    d = 256
    generator = torch.Generator().manual_seed(6)
    model = Tanh(
        0.5 * torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5,
        b=0.5 * torch.randn(d, generator=generator, dtype=torch.float64),
    )
    fps = find_fixed_points(model, torch.randn(8, d, generator=generator), device="cpu", n_eigs=4)
    assert fps.info["method"] == "lm_krylov"
    assert fps.n == 1 and fps.certified.all() and fps.is_stable.all()
    assert fps.eigval_J_xstar.shape == (1, 4) and fps.eigvec_J_xstar.shape == (1, d, 4)
    dense = np.linalg.eigvals(fps.J_xstar[0])
    np.testing.assert_allclose(np.abs(fps.eigval_J_xstar[0]), np.sort(np.abs(dense))[::-1][:4], rtol=1e-4)


def test_discovery_curve_counts_distinct_certified_roots_in_order_of_the_initial_states():
    W = roll_weights(4)
    x0 = grid(4)
    fps = find_fixed_points(Tanh(W), x0, method="newton_krylov", dtype="float64", device="cpu")
    curve = fps.info["discovery_curve"]
    assert curve["n_initial_states"][-1] == len(x0) and curve["n_initial_states"][0] == 1
    assert curve["n_certified_roots"][-1] == int(fps.certified.sum()) == fps.info["n_certified"]
    assert np.all(np.diff(curve["n_certified_roots"]) >= 0)
    # independent count: which true root each of the first 9 initial states converges to
    truth = true_roots(W)
    first9 = find_fixed_points(Tanh(W), x0[:9], method="newton_krylov", dtype="float64", device="cpu")
    reached = {int(np.abs(truth - x).max(axis=1).argmin()) for x in first9.xstar}
    assert curve["n_certified_roots"][curve["n_initial_states"].index(8)] <= len(reached)
    assert curve["n_certified_roots"][curve["n_initial_states"].index(16)] >= len(reached)
