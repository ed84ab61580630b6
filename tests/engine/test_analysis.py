"""Analysis against independent references: float64 finite differences, numpy eig, brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Tanh, roll_weights

from fpf_client.fixed_points import FixedPoints
from workers.engine import analysis, approximate_updates, find_fixed_points
from workers.engine.analysis import decompose, discovery_curve, distance_inliers, q_outliers, unique_indices
from workers.engine.pipeline.selection import newton_steps

torch.set_num_threads(1)


def finite_difference(f, x, eps=1e-6):
    cols = [(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in np.eye(len(x))]
    return np.stack(cols, axis=1)


def test_jacobians_and_eigenvalues_match_finite_differences_and_numpy():
    rng = np.random.default_rng(3)
    d, m = 4, 2
    W = 1.5 * rng.standard_normal((d, d)) / np.sqrt(d)
    B = rng.standard_normal((m, d))
    u = rng.standard_normal((1, m))
    fps = find_fixed_points(Tanh(W, B), rng.uniform(-1, 1, (64, d)), u, dtype="float64", device="cpu")
    assert fps.n >= 1
    for k in range(fps.n):
        x, uk = fps.xstar[k], fps.inputs[k]
        J_fd = finite_difference(lambda h, uk=uk: np.tanh(h @ W + uk @ B), x)
        dFdu_fd = finite_difference(lambda v, x=x: np.tanh(x @ W + v @ B), uk)
        np.testing.assert_allclose(fps.J_xstar[k], J_fd, atol=1e-8)
        np.testing.assert_allclose(fps.dFdu[k], dFdu_fd, atol=1e-8)
        ref = np.linalg.eigvals(J_fd)
        np.testing.assert_allclose(np.abs(fps.eigval_J_xstar[k]), np.sort(np.abs(ref))[::-1], atol=1e-7)
        vec, val = fps.eigvec_J_xstar[k], fps.eigval_J_xstar[k]
        np.testing.assert_allclose(J_fd @ vec, vec * val, atol=1e-6)
        assert fps.is_stable[k] == (np.abs(ref).max() < 1)
        assert fps.n_unstable[k] == (np.abs(ref) > 1).sum()


def test_continuous_eigenvalues_are_sorted_by_real_part():
    J = np.array([[[-3.0, 0.0], [0.0, 0.5]]])
    val, vec = decompose(J, "continuous")
    np.testing.assert_allclose(val[0].real, [0.5, -3.0])
    np.testing.assert_allclose(np.abs(vec[0][:, 0]), [0.0, 1.0])


def test_unique_indices_keeps_the_lowest_q_of_each_cluster():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-1, 1, (5, 3))
    points = np.repeat(centers, 20, axis=0) + rng.uniform(-1e-4, 1e-4, (100, 3))
    q = rng.random(100)
    keep = unique_indices(torch.as_tensor(points), torch.as_tensor(q), 1e-3).numpy()
    assert len(keep) == 5
    expected = sorted(int(np.argmin(np.where(np.arange(100) // 20 == c, q, np.inf))) for c in range(5))
    assert keep.tolist() == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unique_indices_pick_the_earliest_copy_when_q_differs_only_by_rounding(dtype):
    """Copies of one root whose q is at the dtype's rounding floor: which is lower is noise, so the
    first sample wins; a q clearly above the floor still loses to a lower one."""
    eps = torch.finfo(dtype).eps
    points = torch.tensor([[0.5, -0.25], [0.5, -0.25], [2.0, 1.0], [2.0, 1.0]], dtype=dtype)
    noise = torch.tensor([0.9, 0.1, 0.0, 0.0], dtype=torch.float64) * eps**2
    above = torch.tensor([0.0, 0.0, 1e6, 1.0], dtype=torch.float64) * eps**2
    keep = unique_indices(points, (noise + above).to(dtype), 1e-3).tolist()
    assert keep == [0, 3]


@pytest.mark.parametrize("pair_elements", [analysis.PAIR_ELEMENTS, 50])
def test_discovery_curve_matches_a_brute_force_count(monkeypatch, pair_elements):
    """The first sample within tol of each point, counted per prefix of the samples, against all
    pairs compared in a loop; also with the pairs found in many small slices."""
    monkeypatch.setattr(analysis, "PAIR_ELEMENTS", pair_elements)
    rng = np.random.default_rng(5)
    centres = rng.uniform(-1, 1, (30, 4))
    centres[:, 0] = 1.0  # a coordinate every point shares, as saturated units do
    n = 300
    sample_index = np.sort(rng.choice(n, 250, replace=False))
    samples = centres[rng.integers(0, 25, 250)] + rng.uniform(-4e-4, 4e-4, (250, 4))  # centres 25-29: unreached
    certified = rng.random(30) < 0.8
    curve = discovery_curve(sample_index, samples, centres, certified, n, 1e-3)
    first = [
        min((int(i) for i, x in zip(sample_index, samples, strict=True) if np.abs(x - c).max() <= 1e-3), default=n)
        for c in centres[certified]
    ]
    assert curve["n_initial_states"] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert curve["n_certified_roots"] == [sum(f < size for f in first) for size in curve["n_initial_states"]]
    assert 0 < curve["n_certified_roots"][-1] < certified.sum()  # some certified points were never reached


def test_outlier_rules_follow_the_reference():
    init = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    points = np.array([[0.5, 0.5], [9.0, 0.0], [11.0, 0.0]])
    assert distance_inliers(points, init, 10.0).tolist() == [True, True, False]
    assert q_outliers(np.array([1e-14, 2e-14, 1e-12]), 10.0).tolist() == [False, False, True]


def test_approximate_updates_match_the_network_near_each_fixed_point():
    W = roll_weights(3)
    fps = find_fixed_points(Tanh(W), np.random.default_rng(0).uniform(-1, 1, (27, 3)), dtype="float64", device="cpu")
    states = fps.xstar[:, None, :] + 1e-4 * np.random.default_rng(1).standard_normal((fps.n, 5, 3))
    predicted = approximate_updates(fps, states.reshape(-1, 3))
    for k in range(fps.n):
        actual = np.tanh(states[k] @ W)
        np.testing.assert_allclose(predicted[k, 5 * k : 5 * k + 5], actual, atol=1e-7)


def test_approximate_updates_use_input_jacobians():
    fps = FixedPoints(
        xstar=np.zeros((1, 2)), inputs=np.zeros((1, 1)), J_xstar=np.eye(2)[None] * 0.5, dFdu=np.array([[[1.0], [2.0]]])
    )
    out = approximate_updates(fps, np.array([[2.0, 4.0]]), np.array([[1.0]]))
    np.testing.assert_allclose(out, [[[2.0, 4.0]]])


def test_newton_steps_solve_well_conditioned_systems_and_leave_a_continuum_alone():
    """LU where the pivots allow it, the minimum-norm least-squares step on a singular system: at a
    root on a line attractor it corrects the other directions and has no component along the line."""
    rng = np.random.default_rng(2)
    jac = torch.tensor(rng.standard_normal((6, 5, 5)) + 3 * np.eye(5))
    g = torch.tensor(rng.standard_normal((6, 5)))
    jac[0] = torch.diag(torch.tensor([0.0, -0.5, -1.0, -2.0, -0.25], dtype=torch.float64))  # a line of roots along e0
    steps = newton_steps(jac, g)
    np.testing.assert_allclose(
        steps[1:].numpy(), np.linalg.solve(jac[1:].numpy(), -g[1:].numpy()[..., None])[..., 0], rtol=1e-12, atol=1e-12
    )
    minimum_norm = np.linalg.lstsq(jac[0].numpy(), -g[0].numpy(), rcond=None)[0]
    np.testing.assert_allclose(steps[0].numpy(), minimum_norm, rtol=1e-12, atol=1e-12)
    assert steps[0, 0] == 0.0 and (steps[0, 1:] != 0).all()
