"""Solvers against ground truth: the reference's roll networks and linear systems with exact answers."""

from __future__ import annotations

import itertools
from typing import get_args

import numpy as np
import pytest
import torch

from fpf_client.options import FinderOptions, Method
from workers.engine import StepModel, find_fixed_points
from workers.engine.solvers import SOLVERS, Problem, Status, get_solver

torch.set_num_threads(1)


class Tanh(StepModel):
    """h' = tanh(h @ W + u @ B + b), float64 by default."""

    def __init__(self, W, B=None, b=None, dynamics="discrete"):
        self.W = torch.as_tensor(W, dtype=torch.float64)
        d = self.W.shape[0]
        self.B = torch.zeros(1, d, dtype=torch.float64) if B is None else torch.as_tensor(B, dtype=torch.float64)
        self.b = torch.zeros(d, dtype=torch.float64) if b is None else torch.as_tensor(b, dtype=torch.float64)
        self.n_states, self.n_inputs, self.dynamics = d, self.B.shape[0], dynamics

    dtype = property(lambda self: self.W.dtype)
    device = property(lambda self: self.W.device)

    def to(self, device=None, dtype=None):
        out = type(self).__new__(type(self))
        out.__dict__.update(
            {k: v.to(device=device, dtype=dtype) if torch.is_tensor(v) else v for k, v in self.__dict__.items()}
        )
        return out

    def step(self, h, u):
        return torch.tanh(h @ self.W + u @ self.B + self.b)


class Linear(Tanh):
    """F(h, u) = h @ A^T + u @ B + b (or f = the same, continuous)."""

    def step(self, h, u):
        return h @ self.W.T + u @ self.B + self.b


def roll_weights(n: int) -> np.ndarray:
    return np.stack([-np.roll(np.linspace(-1, 1, n), -i) for i in range(n)])


def true_roots(W: np.ndarray, n_starts: int = 600, seed: int = 0) -> np.ndarray:
    """Roots of tanh(h @ W) - h by float64 numpy Newton from many random starts, de-duplicated."""
    rng = np.random.default_rng(seed)
    roots: list[np.ndarray] = []
    for x in rng.uniform(-1.2, 1.2, size=(n_starts, W.shape[0])):
        for _ in range(100):
            f = np.tanh(x @ W)
            G = f - x
            J = (W * (1 - f**2)).T - np.eye(len(x))  # dF_i/dx_j = W[j, i] (1 - f_i^2)
            try:
                x = x - np.linalg.solve(J, G)
            except np.linalg.LinAlgError:
                break
            if not np.all(np.isfinite(x)) or np.abs(x).max() > 10:
                break
        converged = np.all(np.isfinite(x)) and np.linalg.norm(np.tanh(x @ W) - x) < 1e-12
        if converged and not any(np.abs(r - x).max() < 1e-6 for r in roots):
            roots.append(x)
    return np.array(roots)


def same_set(found: np.ndarray, truth: np.ndarray, tol: float = 1e-4) -> bool:
    if len(found) != len(truth):
        return False
    return all(np.abs(found - t).max(axis=1).min() < tol for t in truth)


def grid(n: int) -> np.ndarray:
    return np.array(list(itertools.product([-1.0, 0.0, 1.0], repeat=n)))


@pytest.mark.parametrize("n, expected", [(2, 3), (3, 3), (4, 9)])
def test_newton_finds_exactly_the_true_roots_of_the_roll_networks(n, expected):
    W = roll_weights(n)
    truth = true_roots(W)
    assert len(truth) == expected
    fps = find_fixed_points(Tanh(W), grid(n), dtype="float64", device="cpu")
    assert same_set(fps.xstar, truth), (fps.xstar, truth)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_newton_finds_every_point_adam_finds_on_the_roll_networks(n):
    W = roll_weights(n)
    adam = find_fixed_points(Tanh(W), grid(n), method="adam", device="cpu")
    newton = find_fixed_points(Tanh(W), grid(n), method="auto", device="cpu")
    assert adam.n >= 1
    assert all(x in newton for x in adam.xstar)


def test_newton_float32_default_matches_truth_on_the_largest_roll_network():
    W = roll_weights(4)
    fps = find_fixed_points(Tanh(W), grid(4).astype(np.float32), device="cpu")
    assert same_set(fps.xstar, true_roots(W), tol=1e-3)
    assert fps.certified.all()


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_linear_system_has_its_exact_root_jacobian_and_eigenvalues(dynamics):
    rng = np.random.default_rng(1)
    d, m = 5, 2
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = np.array([0.9, -0.5, 0.3, 1.4, 0.1]) if dynamics == "discrete" else np.array([-1.0, -0.2, 0.5, -3.0, 2.0])
    A = Q @ np.diag(eig) @ Q.T
    B = rng.standard_normal((m, d))
    b = rng.standard_normal(d)
    u = rng.standard_normal((1, m))
    c = u @ B + b
    x_true = np.linalg.solve(np.eye(d) - A, c.T).T if dynamics == "discrete" else -np.linalg.solve(A, c.T).T
    model = Linear(A, B, b, dynamics=dynamics)
    fps = find_fixed_points(model, rng.standard_normal((16, d)), u, dtype="float64", device="cpu")
    assert fps.n == 1
    np.testing.assert_allclose(fps.xstar[0], x_true[0], atol=1e-10)
    np.testing.assert_allclose(fps.J_xstar[0], A, atol=1e-12)
    np.testing.assert_allclose(fps.dFdu[0], B.T, atol=1e-12)
    key = np.abs(eig) if dynamics == "discrete" else eig
    np.testing.assert_allclose(fps.eigval_J_xstar[0].real, eig[np.argsort(-key)], atol=1e-10)
    assert fps.n_unstable[0] == 1 if dynamics == "discrete" else fps.n_unstable[0] == 2
    assert not fps.is_stable[0]
    assert fps.certified[0] and not fps.is_nonisolated[0]


def test_stable_linear_system_is_stable():
    A = np.diag([0.5, -0.2, 0.1])
    fps = find_fixed_points(Linear(A), np.ones((3, 3)), dtype="float64", device="cpu")
    assert fps.is_stable.all() and (fps.n_unstable == 0).all()


def test_line_attractor_is_flagged_non_isolated():
    A = np.diag([1.0, 0.5])  # every point of the first axis is fixed
    fps = find_fixed_points(
        Linear(A), np.array([[0.3, 1.0], [-0.7, 2.0]]), dtype="float64", device="cpu", completeness="none"
    )
    assert fps.n == 2
    assert fps.is_nonisolated.all() and not fps.certified.any()


def test_newton_converges_quadratically_on_a_simple_root():
    model = Tanh(roll_weights(3))
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.tensor([[0.4, 0.1, -0.2]], dtype=torch.float64)
    result = get_solver("lm")(problem, x0, FinderOptions(), warm_start=False)  # Newton steps alone
    assert result.status.tolist() == [Status.CONVERGED]
    assert result.n_iters[0] <= 10
    assert torch.equal(x0, torch.tensor([[0.4, 0.1, -0.2]], dtype=torch.float64))


def test_newton_stalls_at_a_minimum_of_q_that_is_not_a_root():
    # F(h) = h + 0.1 + h^2: G = 0.1 + h^2 has no real root; q has its minimum at h = 0.
    class Ghost(Linear):
        def step(self, h, u):
            return h + 0.1 + h * h

    model = Ghost(np.eye(1))
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    options = FinderOptions()
    result = get_solver("lm")(problem, torch.tensor([[0.8], [-1.5]], dtype=torch.float64), options)
    assert (result.status == Status.STALLED).all()
    assert torch.allclose(result.x, torch.zeros_like(result.x), atol=1e-3)
    assert result.n_iters.max() < 100


def test_registry_names_every_method():
    """Every method but ``auto``, which picks one of them, is a registered solver."""
    assert set(SOLVERS) == {"lm", "newton_krylov", "lm_krylov", "anderson", "adam"}
    assert set(SOLVERS) | {"auto"} == set(get_args(Method))
    with pytest.raises(ValueError):
        get_solver("sequential")
