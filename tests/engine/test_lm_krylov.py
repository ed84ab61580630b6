"""Matrix-free Levenberg-Marquardt against ground truth: dense damped least squares, the roll
networks' float64 roots, a map without roots, and a chaotic network where dense LM converges."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh, grid, roll_weights, true_roots

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points
from workers.engine.solvers import Problem, Status, get_solver
from workers.engine.solvers.linalg.jacobian_products import JacobianProducts
from workers.engine.solvers.linalg.krylov import cgls
from workers.engine.solvers.methods import lm_krylov
from workers.engine.solvers.methods.levenberg_marquardt import CRAWL_WINDOW, levenberg_marquardt

torch.set_num_threads(1)
solve = get_solver("lm_krylov")


@pytest.fixture(autouse=True)
def matrix_free_steps_only(monkeypatch):
    """These problems are small enough for dense steps throughout: test the matrix-free ones."""
    monkeypatch.setattr(lm_krylov, "DENSE_MAX_WORK", 0)


def test_cgls_solves_each_samples_damped_least_squares_problem():
    generator = torch.Generator().manual_seed(2)
    n, d = 8, 30
    J = torch.randn(n, d, d, generator=generator, dtype=torch.float64) / d**0.5
    rhs = torch.randn(n, d, generator=generator, dtype=torch.float64)
    mu = torch.logspace(-3, 1, n, dtype=torch.float64)
    lin = JacobianProducts(rhs, lambda v: torch.einsum("nij,nj->ni", J, v), lambda w: torch.einsum("nij,ni->nj", J, w))
    s, model_q = cgls(lin, rhs, mu, iters=4 * d, rtol=1e-12)
    normal = J.mT @ J + mu[:, None, None] * torch.eye(d, dtype=torch.float64)
    expected = torch.linalg.solve(normal, (J.mT @ rhs.unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(s, expected, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(model_q, 0.5 * ((torch.einsum("nij,nj->ni", J, s) - rhs) ** 2).sum(-1))


@pytest.mark.parametrize("warm_start", [False, True])
def test_finds_exactly_the_true_roots_of_the_roll_networks(warm_start):
    W = roll_weights(4)
    problem = Problem(Tanh(W), torch.zeros(1, 1, dtype=torch.float64))
    result = solve(problem, torch.tensor(grid(4)), FinderOptions(), warm_start=warm_start)
    found = result.x[result.converged].numpy()
    truth = true_roots(W)
    assert result.converged.float().mean() > 0.9
    distance = np.abs(found[:, None] - truth[None]).max(-1).min(-1)
    assert distance.max() < 1e-5, distance.max()  # every converged sample sits on a true root
    fps = find_fixed_points(Tanh(W), grid(4), method="lm_krylov", dtype="float64", device="cpu")
    assert fps.info["method"] == "lm_krylov" and fps.certified.all()


def test_stalls_honestly_at_a_minimum_of_q_that_is_not_a_root():
    class Ghost(Linear):  # G = 0.1 + h^2: no root; q is smallest at h = 0
        def step(self, h, u):
            return h + 0.1 + h * h

    problem = Problem(Ghost(np.eye(1)), torch.zeros(1, 1, dtype=torch.float64))
    result = solve(problem, torch.tensor([[0.8], [-1.5]], dtype=torch.float64), FinderOptions())
    assert (result.status == Status.STALLED).all()
    assert torch.allclose(result.x, torch.zeros_like(result.x), atol=1e-3)


def test_converges_on_a_chaotic_network_at_least_as_often_as_dense_lm():
    d = 64
    generator = torch.Generator().manual_seed(0)
    model = Tanh(1.5 * torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5)
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.randn(96, d, generator=generator, dtype=torch.float64)
    for _ in range(20):  # states on the chaotic attractor
        x0 = problem.map(x0)
    result = solve(problem, x0, FinderOptions())
    dense = get_solver("lm")(problem, x0, FinderOptions(), warm_start=False)  # dense LM alone
    assert result.converged.sum() >= max(dense.converged.sum(), len(x0) // 2), (
        result.converged.sum(),
        dense.converged.sum(),
    )
    roots = result.x[result.converged]
    # independent check: a float64 dense Newton step from each root moves it less than the engine's
    # certification threshold (0.1 tol_unique)
    step = torch.linalg.solve(problem.jacobian(roots), problem.residual(roots).unsqueeze(-1)).squeeze(-1)
    assert step.abs().max() < 1e-4


@pytest.mark.parametrize("shrink, status", [(0.995, Status.STALLED), (0.5, Status.CONVERGED)])
def test_lm_stops_samples_whose_q_crawls(shrink, status):
    """Steps that cut q by 1 % each (a valley of q, not a root) stop after one window as stalled;
    steps that cut it by half converge. The rule is LM's, shared by the dense and matrix-free solvers."""
    problem = Problem(Linear(0.5 * np.eye(3)), torch.zeros(1, 1, dtype=torch.float64))  # G = -x / 2
    x0 = torch.tensor([[1.0, -0.5, 0.3], [0.2, 0.9, -1.1]], dtype=torch.float64)

    def toward_the_root(problem, b):  # x <- shrink x, and the decrease of q that it gives exactly
        return (shrink - 1.0) * b.x, b.q * (1.0 - shrink**2)

    result = levenberg_marquardt(problem, x0, FinderOptions(max_iters=400), None, toward_the_root, lambda_init=1e-3)
    assert (result.status == status).all()
    if status == Status.STALLED:
        assert (result.n_iters == CRAWL_WINDOW).all()
        assert (result.q > FinderOptions().tol_q).all()
    else:
        assert (result.n_iters < CRAWL_WINDOW).all()


def _ill_conditioned_linear(d: int, generator: torch.Generator) -> tuple[Problem, torch.Tensor]:
    """G(x) = J x + b with singular values of J from 1 down to 1e-4, and its root."""
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    jacobian = basis @ torch.diag(torch.logspace(0, -4, d, dtype=torch.float64)) @ basis.T  # dG/dx
    b = torch.randn(d, generator=generator, dtype=torch.float64)
    model = Linear((jacobian + torch.eye(d, dtype=torch.float64)).T.numpy(), b=b.numpy())  # G = x J^T + b
    return Problem(model, torch.zeros(1, 1, dtype=torch.float64)), torch.linalg.solve(jacobian, -b)


def test_the_last_few_samples_take_dense_steps(monkeypatch):
    """With two products per step CGLS cannot solve an ill-conditioned linear system, so
    matrix-free LM crawls; once the batch is within DENSE_MAX_WORK, dense LM solves it exactly."""
    d = 24
    generator = torch.Generator().manual_seed(3)
    problem, root = _ill_conditioned_linear(d, generator)
    x0 = torch.randn(4, d, generator=generator, dtype=torch.float64)
    options = FinderOptions(max_iters=60, lm_krylov={"cg_iters": 2})
    crawling = solve(problem, x0, options, warm_start=False)
    assert not crawling.converged.any()
    monkeypatch.setattr(lm_krylov, "DENSE_MAX_WORK", 4 * d**3)
    monkeypatch.setattr(lm_krylov, "DENSE_MAX_FRACTION", 1.0)
    dense = solve(problem, x0, options, warm_start=False)
    assert dense.converged.all() and (dense.n_iters <= 10).all(), dense.n_iters
    torch.testing.assert_close(dense.x, root.expand(4, d), rtol=1e-5, atol=1e-6)  # |root| ~ 1e3


def test_samples_near_a_root_of_a_small_network_take_dense_steps(monkeypatch):
    """Where CGLS crawls (two products per step, an ill-conditioned system), samples that start
    within NEAR_ROOT_RESIDUAL of the root converge in dense steps; far ones keep crawling."""
    d = 24
    generator = torch.Generator().manual_seed(3)
    problem, root = _ill_conditioned_linear(d, generator)
    near = root + 0.1 * torch.randn(4, d, generator=generator, dtype=torch.float64)
    far = torch.randn(4, d, generator=generator, dtype=torch.float64)
    x0 = torch.cat([near, far])
    g0 = problem.residual(x0).norm(dim=-1)
    assert (g0[:4] <= lm_krylov.NEAR_ROOT_RESIDUAL * (1 + x0[:4].norm(dim=-1))).all()
    assert (g0[4:] > lm_krylov.NEAR_ROOT_RESIDUAL * (1 + x0[4:].norm(dim=-1))).all()
    options = FinderOptions(max_iters=12, lm_krylov={"cg_iters": 2})
    monkeypatch.setattr(lm_krylov, "DENSE_MAX_WORK", 2**32)
    monkeypatch.setattr(lm_krylov, "DENSE_MAX_FRACTION", 0.0)  # not the last-few rule
    result = solve(problem, x0, options, warm_start=False)
    assert result.converged[:4].all() and (result.n_iters[:4] <= 10).all(), result.n_iters
    assert not result.converged[4:].any()
    # |x - root| <= |G| / (smallest singular value of J), and |G| < sqrt(2 tol_q) at convergence
    assert (result.x[:4] - root).norm(dim=-1).max() <= (2 * options.tol_q) ** 0.5 / 1e-4
    monkeypatch.setattr(lm_krylov, "NEAR_ROOT_DENSE_MAX_STATES", d - 1)
    assert not solve(problem, x0, options, warm_start=False).converged.any()
