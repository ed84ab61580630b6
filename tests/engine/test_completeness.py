"""Completeness: restarts between attractors find the saddles a first pass missed.

Ground truth: a product of double wells whose nine roots are known in closed form, a line
attractor (no isolated roots to pair), brute-force de-duplication, and on the shipped
flip-flop networks the reference's Adam run from the same initial states.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh

from examples.flipflop.networks import CELLS, run_steps
from examples.flipflop.task import FlipFlopTask
from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points, load_model, sample_states
from workers.engine.analysis import unique_indices
from workers.engine.pipeline import run
from workers.engine.solvers import Problem
from workers.engine.solvers.methods.lm import MIXING_ITERS, solve_lm
from workers.engine.solvers.strategies.completeness import Unfinished, _certified, midpoint_restarts

torch.set_num_threads(1)
DATA = Path(__file__).resolve().parents[1] / "data"


class DoubleWells(Tanh):
    """F(h) = h + a (h - h^3) per coordinate: attractors at the corners of [-1, 1]^d, index-k
    saddles where k coordinates are 0; 3^d isolated roots in all."""

    def step(self, h, u):
        return h + 0.1 * (h - h**3)


def corners(d: int) -> np.ndarray:
    return np.array(list(itertools.product([-1.0, 1.0], repeat=d)))


def test_midpoints_between_attractors_find_every_saddle_the_first_pass_missed():
    d = 3
    model = DoubleWells(np.eye(d))
    x0 = np.repeat(corners(d), 4, axis=0) + np.random.default_rng(0).uniform(-0.2, 0.2, (4 * 2**d, d))
    first = find_fixed_points(model, x0, dtype="float64", device="cpu", completeness="none")
    full = find_fixed_points(model, x0, dtype="float64", device="cpu")
    truth = np.array(list(itertools.product([-1.0, 0.0, 1.0], repeat=d)))
    assert first.n == 2**d and first.is_stable.all()
    assert full.n == len(truth)
    assert all(t in full for t in truth)
    assert sorted(np.bincount(full.n_unstable)) == sorted([8, 12, 6, 1])  # corners, edges, faces, centre
    assert full.info["completeness_passes"] >= 1
    assert full.info["n_restarts"] == 2**d * (2**d - 1) // 2  # every pair of corners once, none again


class WellsAndContraction(Tanh):
    """Double wells in the first two coordinates, F = h / 2 in the others: the 9 roots of
    DoubleWells in two dimensions, padded with zeros."""

    def step(self, h, u):
        wells = h[:, :2] + 0.1 * (h[:, :2] - h[:, :2] ** 3)
        return torch.cat([wells, 0.5 * h[:, 2:]], dim=1)


def test_newton_restarts_between_attractors_when_it_runs_lm_krylov():
    """From 64 states auto's first pass is lm_krylov; the restarts still follow below 256 states."""
    d = 64
    rng = np.random.default_rng(1)
    x0 = rng.normal(0.0, 0.5, (32, d))
    x0[:, :2] = np.repeat(corners(2), 8, axis=0) + rng.uniform(-0.2, 0.2, (32, 2))
    fps = find_fixed_points(WellsAndContraction(np.eye(d)), x0, dtype="float64", device="cpu")
    truth = np.zeros((9, d))
    truth[:, :2] = list(itertools.product([-1.0, 0.0, 1.0], repeat=2))
    assert fps.info["method"] == "lm_krylov" and fps.info["completeness_passes"] >= 1
    assert fps.n == len(truth) and all(t in fps for t in truth)


def test_restarts_report_their_starts_and_pair_each_attractor_pair_once():
    model = DoubleWells(np.eye(2))
    roots = torch.tensor(corners(2))
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    restarts = midpoint_restarts(
        problem, roots, torch.zeros(4, dtype=torch.int64), FinderOptions(), torch.Generator().manual_seed(0)
    )
    assert restarts.passes == 1  # the saddles found are no attractors: no new pairs
    midpoints = {tuple(x) for x in restarts.starts.tolist()}
    assert midpoints == {(0.0, -1.0), (-1.0, 0.0), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0)}
    assert len(restarts.starts) == 6  # (0, 0) is the midpoint of both diagonals
    assert restarts.result.converged.all()


def test_roots_of_another_input_condition_are_never_paired():
    model = DoubleWells(np.eye(1))
    roots = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    problem = Problem(model, torch.zeros(2, 1, dtype=torch.float64))
    restarts = midpoint_restarts(problem, roots, torch.tensor([0, 1]), FinderOptions(), torch.Generator())
    assert len(restarts.starts) == 0 and restarts.passes == 0


def test_a_line_attractor_has_no_isolated_roots_to_pair():
    fps = find_fixed_points(
        Linear(np.diag([1.0, 0.5])), np.array([[0.3, 1.0], [-0.7, 2.0], [0.9, -1.0]]), dtype="float64", device="cpu"
    )
    assert fps.n == 3 and fps.is_nonisolated.all()
    assert fps.info["n_restarts"] == 0


@pytest.mark.parametrize("n, saturated", [(600, False), (600, True), (24, False)])
def test_unique_indices_match_the_greedy_rule_computed_by_brute_force(n, saturated):
    """Windowed search (600 points, also with coordinates every point shares) and all pairs (24)."""
    rng = np.random.default_rng(3)
    centres = rng.uniform(-1, 1, (40, 5))
    if saturated:  # as units of a trained network at +-1: no window on these coordinates helps
        centres[:, :2] = 1.0
    points = centres[rng.integers(0, 40, n)] + rng.uniform(-6e-4, 6e-4, (n, 5))
    q = rng.random(n)
    alive, kept = np.ones(n, dtype=bool), []
    for i in np.argsort(q, kind="stable"):
        if alive[i]:
            kept.append(i)
            alive &= np.abs(points - points[i]).max(1) > 1e-3
    got = unique_indices(torch.tensor(points), torch.tensor(q), 1e-3).numpy()
    np.testing.assert_array_equal(got, np.sort(kept))


@pytest.mark.parametrize("method, max_iters", [("auto", 3), ("adam", 300)])
def test_no_converged_sample_gives_an_empty_result_with_honest_counts_and_slow_points(method, max_iters):
    model = DoubleWells(np.eye(2))
    x0 = np.random.default_rng(1).uniform(-1.5, 1.5, (32, 2))
    # float32 cannot reach q < 1e-300 (the bound rounds to 0): nothing converges
    fps = find_fixed_points(model, x0, method=method, tol_q=1e-300, q_slow=1e-4, max_iters=max_iters, device="cpu")
    assert fps.n == 0 and fps.xstar.shape == (0, 2) and fps.eigval_J_xstar.shape == (0, 2)
    info = fps.info
    assert info["n_converged"] == 0
    assert info["n_stalled"] + info["n_capped"] == info["n_samples"] == 32
    assert info["n_restarts"] == 0
    assert fps.slow_points is not None and fps.slow_points.n >= 1
    assert (fps.slow_points.qstar < 1e-4).all()


def _flipflop_states(cell: str) -> tuple[torch.jit.ScriptModule, np.ndarray]:
    """The benchmark's states: 1024 from 128 task trajectories, plus noise 0.5."""
    step = torch.jit.load(str(DATA / f"flipflop_{cell}.pt"))
    d = load_model(DATA / f"flipflop_{cell}.pt").n_states
    inputs, _ = FlipFlopTask().sample(128, torch.Generator().manual_seed(11))
    with torch.no_grad():
        trajectories = run_steps(step, inputs, torch.zeros(128, d)).numpy()
    return step, sample_states(trajectories, 1024, noise_scale=0.5, rng=0)


@pytest.mark.slow
@pytest.mark.parametrize("cell", CELLS)
def test_newton_finds_every_isolated_point_adam_finds_on_the_flip_flops(cell):
    step, x0 = _flipflop_states(cell)
    u = np.zeros((1, 3), dtype=np.float32)
    adam = find_fixed_points(step, x0, u, method="adam")  # the reference's settings
    newton = find_fixed_points(step, x0, u, method="auto")
    adam_isolated = adam[~adam.is_nonisolated]
    newton_isolated = newton[~newton.is_nonisolated]
    missing = [x for x in adam_isolated.xstar if x not in newton]
    assert not missing, f"newton missed {len(missing)} of the {adam_isolated.n} isolated points adam found"
    assert newton_isolated.n >= adam_isolated.n
    assert newton_isolated.n == 27  # 8 memories and the saddles between them


def test_unique_indices_keep_far_out_points_whose_float32_spacing_exceeds_the_tolerance():
    points = torch.tensor([[3e7, 0.0], [3e7, 0.0], [3e7, 5.0], [-1.0, 0.0]], dtype=torch.float32)
    keep = unique_indices(points, torch.tensor([0.1, 0.2, 0.3, 0.4]), 1e-3)
    assert keep.tolist() == [0, 2, 3]


def test_lm_steps_taken_with_the_restarts_change_no_result(monkeypatch):
    """With restarts, the initial states Anderson mixing does not converge take their LM steps in one
    call with the first restarts: each ends where the first pass's own LM call would leave it, and
    the search reports the same points and samples."""
    step, x0 = _flipflop_states("tanh")
    u = np.zeros((1, 3), dtype=np.float32)
    together = find_fixed_points(step, x0, u, return_all_samples=True, device="cpu")
    monkeypatch.setattr(run, "newton_with_restarts", lambda method, restarts: False)
    apart = find_fixed_points(step, x0, u, return_all_samples=True, device="cpu")
    assert together.info["method"] == "lm" and together.info["n_restarts"] == apart.info["n_restarts"] > 0
    assert (together.all_samples.n_iters > MIXING_ITERS).sum() >= 5  # initial states that LM finished
    # equal up to float32 rounding, which differs with the size of the batch a row is computed in
    for fps, other in ((together.all_samples, apart.all_samples), (together, apart)):
        np.testing.assert_array_equal(fps.n_iters, other.n_iters)
        np.testing.assert_array_equal(fps.cond_id, other.cond_id)
        np.testing.assert_allclose(fps.xstar, other.xstar, rtol=0, atol=1e-6)
        np.testing.assert_allclose(fps.qstar, other.qstar, rtol=0, atol=1e-13)
    np.testing.assert_array_equal(together.is_stable, apart.is_stable)
    np.testing.assert_allclose(together.eigval_J_xstar, apart.eigval_J_xstar, rtol=0, atol=1e-5)
    assert {k: v for k, v in together.info.items() if k != "wall_time_s"} == {
        k: v for k, v in apart.info.items() if k != "wall_time_s"
    }


def test_unfinished_samples_are_solved_even_without_restarts_to_take_them_along():
    model = DoubleWells(np.eye(2))
    problem = Problem(model, torch.zeros(1, 1, dtype=torch.float64))
    x0 = torch.tensor([[0.9, -1.2], [0.1, 0.05]], dtype=torch.float64)
    unfinished = Unfinished(x0, torch.zeros(2, dtype=torch.int64), FinderOptions())
    no_roots = torch.zeros(0, 2, dtype=torch.float64)
    restarts = midpoint_restarts(
        problem, no_roots, torch.zeros(0, dtype=torch.int64), FinderOptions(), torch.Generator(), unfinished=unfinished
    )
    expected = solve_lm(problem, x0, FinderOptions(), warm_start=False)
    assert restarts.unfinished is not None and restarts.unfinished.converged.all()
    torch.testing.assert_close(restarts.unfinished.x, expected.x, rtol=0, atol=0)
    # their roots, a corner and the centre, are the seeds: one attractor is too few to pair, so the
    # first restart starts between the two isolated roots
    torch.testing.assert_close(restarts.starts[0], expected.x.mean(0), rtol=0, atol=0)
    assert restarts.passes >= 1


def _with_spectrum(eigenvalues: np.ndarray, rng: np.random.Generator, skew: float) -> np.ndarray:
    """A real matrix with these eigenvalues (real, or conjugate pairs in consecutive entries),
    made non-normal by a random similarity whose condition grows with ``skew``."""
    d = len(eigenvalues)
    blocks = np.zeros((d, d))
    i = 0
    while i < d:
        lam = eigenvalues[i]
        if abs(lam.imag) > 0:
            blocks[i : i + 2, i : i + 2] = [[lam.real, lam.imag], [-lam.imag, lam.real]]
            i += 2
        else:
            blocks[i, i] = lam.real
            i += 1
    basis = np.eye(d) + skew * np.triu(rng.standard_normal((d, d)), 1)
    basis = rng.standard_normal((d, d)) @ np.diag(rng.uniform(0.5, 2.0, d)) @ basis
    return basis @ blocks @ np.linalg.inv(basis)


def test_power_certificates_never_contradict_the_eigenvalues():
    """Attractor: every |lambda| < 1 and |lambda - 1| >= tol; unstable: some |lambda| > 1. Checked on
    random matrices with spectra across the unit circle, conjugate pairs and strongly non-normal
    ones (a nilpotent-like part times 20), and clear cases must be settled."""
    rng = np.random.default_rng(7)
    d, tol = 16, 1e-3
    matrices, radii = [], []
    for skew in (0.0, 1.0, 20.0):
        for radius in (0.3, 0.6, 0.9, 0.99, 0.999, 1.0, 1.001, 1.02, 1.2, 1.8, 3.0):
            magnitudes = radius * rng.uniform(0.1, 1.0, d)
            magnitudes[0] = radius
            values = []
            for m1, m2 in magnitudes.reshape(-1, 2):
                if rng.random() < 0.5:  # a conjugate pair
                    angle = rng.uniform(0.1, np.pi - 0.1)
                    values += [m1 * np.exp(1j * angle), m1 * np.exp(-1j * angle)]
                else:
                    values += list(rng.choice([-1.0, 1.0], 2) * [m1, m2])
            matrices.append(_with_spectrum(np.array(values, dtype=complex), rng, skew))
            radii.append(radius)
    jac = torch.tensor(np.array(matrices)) - torch.eye(d, dtype=torch.float64)  # dG/dx = dF/dx - I
    attractor, unstable = _certified(jac, tol)
    eig = np.linalg.eigvals(np.array(matrices))
    assert not (attractor & unstable).any()
    for k in torch.nonzero(attractor).squeeze(-1).tolist():
        assert np.abs(eig[k]).max() < 1 and np.abs(eig[k] - 1).min() >= tol
    for k in torch.nonzero(unstable).squeeze(-1).tolist():
        assert np.abs(eig[k]).max() > 1
    radii = np.array(radii)
    assert attractor.numpy()[radii <= 0.6].mean() > 0.6  # clear cases are settled without eigenvalues
    assert unstable.numpy()[radii >= 1.8].mean() > 0.6


def test_roots_the_certificates_classify_match_the_eigenvalues_on_the_flip_flop():
    step, x0 = _flipflop_states("tanh")
    fps = find_fixed_points(step, x0, np.zeros((1, 3), dtype=np.float32), device="cpu")
    model = load_model(DATA / "flipflop_tanh.pt").to(torch.device("cpu"), torch.float64)
    problem = Problem(model, torch.zeros(1, 3, dtype=torch.float64))
    roots = torch.tensor(fps.xstar, dtype=torch.float64)
    attractor, unstable = _certified(problem.jacobian(roots), 1e-3)
    assert attractor.numpy().tolist() == fps.is_stable.tolist()  # every one settled, as the analysis says
    assert unstable.numpy().tolist() == (~fps.is_stable).tolist()
