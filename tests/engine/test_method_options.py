"""Per-method options reach their solver: a knob set changes what runs (iteration counts against
analytic roots), the documented defaults are what runs when nothing is set, and the flat names of
earlier versions give the same search as their groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh, grid, roll_weights

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points
from workers.engine.solvers import Problem, SolveResult, get_solver

torch.set_num_threads(1)


def _contraction(d: int, seed: int = 0) -> tuple[Problem, torch.Tensor, np.ndarray]:
    """x -> A x + b with spectral radius 0.8 (float64), 8 initial states, and its one root."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, d))
    A *= 0.8 / np.abs(np.linalg.eigvals(A)).max()
    b = rng.standard_normal(d)
    problem = Problem(Linear(A, b=b), torch.zeros(1, 1, dtype=torch.float64))
    return problem, torch.as_tensor(rng.standard_normal((8, d))), np.linalg.solve(np.eye(d) - A, b)


def _converged_to(result: SolveResult, root: np.ndarray, atol: float = 1e-5) -> bool:
    return bool(result.converged.all()) and np.abs(result.x.numpy() - root).max() < atol


def _same(a: SolveResult, b: SolveResult) -> bool:
    return torch.equal(a.x, b.x) and torch.equal(a.n_iters, b.n_iters) and torch.equal(a.status, b.status)


@pytest.mark.parametrize("method", ["lm", "lm_krylov"])
def test_warm_start_iters_and_lambda_init_change_the_steps_taken(method: str) -> None:
    """An affine map: LM's first nearly undamped step is Newton's, exact up to the damping, so without
    a warm start two or three steps converge; the Anderson warm start checks every few steps, and a
    large first damping makes the first steps short gradient steps."""
    problem, x0, root = _contraction(8)
    solve = get_solver(method)
    default = solve(problem, x0, FinderOptions())
    cold = solve(problem, x0, FinderOptions(**{method: {"warm_start_iters": 0}}))
    damped = solve(problem, x0, FinderOptions(**{method: {"warm_start_iters": 0, "lambda_init": 1e4}}))
    assert _converged_to(default, root) and _converged_to(cold, root) and _converged_to(damped, root)
    assert cold.n_iters.max() <= 3 < default.n_iters.min(), (cold.n_iters, default.n_iters)
    assert damped.n_iters.min() > cold.n_iters.max(), (damped.n_iters, cold.n_iters)


@pytest.mark.parametrize(("d", "mixing"), [(8, 20), (40, 300)])
def test_lm_mixes_20_steps_up_to_32_states_and_300_above_by_default(d: int, mixing: int) -> None:
    problem, x0, _ = _contraction(d, seed=d)
    solve = get_solver("lm")
    search = {"tol_q": 1e-30, "max_iters": 1000}  # no sample converges: mixing runs to its cap
    default = solve(problem, x0, FinderOptions(**search))
    explicit = solve(problem, x0, FinderOptions(**search, lm={"warm_start_iters": mixing}))
    shorter = solve(problem, x0, FinderOptions(**search, lm={"warm_start_iters": 5}))  # before any hand-over
    assert _same(default, explicit) and not _same(default, shorter)


def test_lm_krylov_and_newton_krylov_defaults_are_the_documented_values() -> None:
    problem, x0, _ = _contraction(40, seed=1)
    for method, documented in [
        ("lm_krylov", {"warm_start_iters": 300, "lambda_init": 1e-3, "cg_iters": 30, "cg_rtol": 1e-3}),
        ("newton_krylov", {"gmres_restart": 10, "gmres_max_restarts": 5}),
    ]:
        solve = get_solver(method)
        assert _same(solve(problem, x0, FinderOptions()), solve(problem, x0, FinderOptions(**{method: documented})))


def test_a_short_gmres_basis_takes_more_newton_steps() -> None:
    """On an affine map with condition number 1e2, GMRES with 60 vectors solves a d = 24 Newton system
    to its forcing tolerance; with one vector and no restart each step is a line search along the
    residual, and Newton needs many more steps to reach the same root."""
    rng = np.random.default_rng(5)
    d = 24
    basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
    jacobian = basis @ np.diag(np.logspace(0, -2, d)) @ basis.T  # dG/dx
    b = rng.standard_normal(d)
    problem = Problem(Linear(jacobian + np.eye(d), b=b), torch.zeros(1, 1, dtype=torch.float64))
    root = np.linalg.solve(jacobian, -b)
    x0 = torch.as_tensor(rng.standard_normal((4, d)))
    solve = get_solver("newton_krylov")
    full = solve(problem, x0, FinderOptions(max_iters=2000))
    short = solve(
        problem, x0, FinderOptions(max_iters=2000, newton_krylov={"gmres_restart": 1, "gmres_max_restarts": 0})
    )
    bound = (2 * 1e-12) ** 0.5 / 1e-2  # |x - root| <= |G| / (smallest singular value of dG/dx)
    assert _converged_to(full, root, bound) and full.n_iters.max() <= 10, full.n_iters
    assert short.n_iters.min() > 2 * full.n_iters.max(), (short.n_iters, full.n_iters)
    assert not short.converged.any() or _converged_to(short.select(short.converged), root, bound)


def test_a_small_warm_start_changes_the_search_info_and_not_the_roots() -> None:
    W = roll_weights(3)
    search = {"method": "lm", "dtype": "float64", "device": "cpu"}
    default = find_fixed_points(Tanh(W), grid(3), **search)
    cold = find_fixed_points(Tanh(W), grid(3), lm={"warm_start_iters": 1}, **search)
    assert cold.info["iterations"] != default.info["iterations"]
    assert cold.n == default.n and all(x in cold for x in default.xstar)


def test_flat_adam_names_give_the_same_search_as_the_adam_group() -> None:
    W = roll_weights(3)
    search = {"method": "adam", "max_iters": 300, "dtype": "float64", "device": "cpu", "return_all_samples": True}
    with pytest.warns(DeprecationWarning, match="'lr_init' is now adam.lr_init"):
        flat = find_fixed_points(Tanh(W), grid(3), lr_init=0.05, adam_hps={"epsilon": 0.01}, **search)
    grouped = find_fixed_points(Tanh(W), grid(3), adam={"lr_init": 0.05, "hps": {"epsilon": 0.01}}, **search)
    default = find_fixed_points(Tanh(W), grid(3), **search)
    np.testing.assert_array_equal(flat.all_samples.xstar, grouped.all_samples.xstar)
    np.testing.assert_array_equal(flat.all_samples.n_iters, grouped.all_samples.n_iters)
    assert not np.array_equal(flat.all_samples.xstar, default.all_samples.xstar)
