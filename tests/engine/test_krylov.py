"""Batched GMRES and the recorded Jacobian products against dense float64 linear algebra."""

from __future__ import annotations

import pytest
import torch
from test_solvers import Tanh

from workers.engine.solvers import Problem
from workers.engine.solvers.linalg.krylov import gmres

torch.set_num_threads(1)


def systems(n: int, d: int, spread: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    A = (
        torch.eye(d, dtype=torch.float64)
        + spread * torch.randn(n, d, d, generator=generator, dtype=torch.float64) / d**0.5
    )
    b = torch.randn(n, d, generator=generator, dtype=torch.float64)
    return A, b


def product(A: torch.Tensor):
    return lambda v: torch.einsum("nij,nj->ni", A, v)


def test_restarted_gmres_matches_a_dense_solve():
    A, b = systems(32, 40, 0.5)
    result = gmres(product(A), b, 1e-10, restart=15, max_restarts=10)
    assert bool(result.converged.all())
    torch.testing.assert_close(result.x, torch.linalg.solve(A, b), rtol=1e-7, atol=1e-7)
    true_residual = torch.linalg.vector_norm(b - product(A)(result.x), dim=-1)
    torch.testing.assert_close(result.residual_norm, true_residual, rtol=1e-3, atol=1e-12)


def test_each_sample_stops_at_its_own_tolerance_and_reports_its_residual():
    A, b = systems(16, 30, 0.9, seed=1)
    rtol = torch.logspace(-1, -8, 16, dtype=torch.float64)
    result = gmres(product(A), b, rtol, restart=30)
    relative = torch.linalg.vector_norm(b - product(A)(result.x), dim=-1) / torch.linalg.vector_norm(b, dim=-1)
    assert bool((relative <= rtol * 1.001).all())
    assert relative[0] > 1e-3, "a loose sample should not be solved to the tightest tolerance"
    torch.testing.assert_close(
        result.residual_norm / torch.linalg.vector_norm(b, dim=-1), relative, rtol=1e-4, atol=1e-12
    )


def test_a_sample_whose_rhs_is_zero_and_an_exactly_solvable_one_stay_finite():
    A, b = systems(3, 8, 0.5)
    b[0] = 0.0
    A[1] = torch.eye(8, dtype=torch.float64)  # Krylov space of dimension one: a lucky breakdown
    result = gmres(product(A), b, 1e-12, restart=8)
    assert torch.isfinite(result.x).all()
    assert torch.equal(result.x[0], torch.zeros(8, dtype=torch.float64))
    torch.testing.assert_close(result.x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-9)


def test_a_capped_solve_says_it_did_not_converge():
    A, b = systems(4, 50, 1.5)
    result = gmres(product(A), b, 1e-12, restart=5)
    assert not bool(result.converged.any())
    assert result.n_matvecs == 5


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_recorded_products_equal_the_dense_jacobian(dynamics):
    generator = torch.Generator().manual_seed(2)
    model = Tanh(1.3 * torch.randn(6, 6, generator=generator, dtype=torch.float64), dynamics=dynamics)
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64), dynamics)
    x = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    v = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    lin = problem.jacobian_products(x)
    jac = problem.jacobian(x)
    torch.testing.assert_close(lin.value, problem.residual(x))
    torch.testing.assert_close(lin.jvp(v), torch.einsum("nij,nj->ni", jac, v))
    torch.testing.assert_close(lin.vjp(v), torch.einsum("ni,nij->nj", v, jac))
