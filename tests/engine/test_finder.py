"""find_fixed_points as callers use it: arrays, options, progress, chunking, flip-flop completeness."""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from test_solvers import Linear, Tanh, grid, roll_weights

from fpf_client.errors import InvalidModel, NonFinite, ShapeMismatch
from workers.engine import as_step_model, find_fixed_points, load_model, precision, sample_states
from workers.engine.solvers import TimeUp

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2]


def test_caller_arrays_are_never_modified():
    x0 = grid(3).astype(np.float32)
    x0_torch = torch.tensor(x0)
    before = x0.copy()
    find_fixed_points(Tanh(roll_weights(3)), x0, method="adam", device="cpu")
    find_fixed_points(Tanh(roll_weights(3)), x0_torch, method="auto", device="cpu")
    np.testing.assert_array_equal(x0, before)
    np.testing.assert_array_equal(x0_torch.numpy(), before)


@pytest.mark.parametrize("method", ["auto", "adam"])
def test_a_batch_of_one_works(method):
    fps = find_fixed_points(Tanh(roll_weights(2)), np.array([[0.9, -0.9]]), method=method, device="cpu")
    assert fps.n == 1 and fps.info["n_samples"] == 1
    for key in ("n_samples", "n_converged", "n_stalled", "n_capped", "wall_time_s", "method", "iterations"):
        assert key in fps.info


@pytest.mark.parametrize("cell", [torch.nn.GRU, torch.nn.LSTM])
def test_a_recurrent_layer_with_a_single_root_runs_the_default_search(cell):
    """With one attractor there is no pair to restart from: the completeness search is empty
    (it once ran the solver on zero states, which torch's recurrent layers cannot take)."""
    torch.manual_seed(0)
    net = cell(4, 16, batch_first=True).requires_grad_(False)
    model = as_step_model(net)
    states = np.random.default_rng(0).normal(0.0, 0.5, (64, model.n_states)).astype(np.float32)
    fps = find_fixed_points(net, states, dtype="float64")
    # the default-initialised layer contracts: iterating the map reaches the root independently
    x, u = torch.as_tensor(states, dtype=torch.float64), torch.zeros(64, 4, dtype=torch.float64)
    model = model.to(torch.device("cpu"), torch.float64)
    for _ in range(2000):
        x = model.step(x, u)
    assert np.ptp(x.numpy(), axis=0).max() < 1e-9
    assert fps.n == 1 and fps.info["n_restarts"] == 0
    np.testing.assert_allclose(fps.xstar[0], x[0].numpy(), atol=1e-9)


def test_progress_reports_and_its_exceptions_propagate():
    reports = []
    find_fixed_points(Tanh(roll_weights(4)), grid(4), device="cpu", progress=reports.append)
    assert reports and set(reports[-1]) == {"phase", "iteration", "n_total", "n_converged", "q_median", "q_max"}
    assert reports[-1]["n_total"] == 81

    class Cancelled(Exception):
        pass

    def cancel(report):
        raise Cancelled

    with pytest.raises(Cancelled):
        find_fixed_points(Tanh(roll_weights(4)), grid(4), device="cpu", progress=cancel)


def test_shapes_and_values_are_checked():
    model = Tanh(roll_weights(3))
    with pytest.raises(ShapeMismatch):
        find_fixed_points(model, np.zeros((4, 2)), device="cpu")
    with pytest.raises(ShapeMismatch):
        find_fixed_points(model, np.zeros((4, 3)), np.zeros((2, 1)), device="cpu")
    with pytest.raises(NonFinite):
        find_fixed_points(model, np.full((4, 3), np.nan), device="cpu")


def test_chunks_give_the_same_points_as_one_batch():
    x0 = np.random.default_rng(0).uniform(-1, 1, (200, 4))
    whole = find_fixed_points(Tanh(roll_weights(4)), x0, dtype="float64", device="cpu")
    chunked = find_fixed_points(Tanh(roll_weights(4)), x0, dtype="float64", device="cpu", batch_size=7)
    assert whole.n == chunked.n == 9
    assert all(x in chunked for x in whole.xstar)


@pytest.mark.parametrize("method", ["auto", "adam"])
def test_each_root_is_reported_once_to_the_precision_of_its_dtype(method):
    """h' = A h + u with known root (I - A)^-1 u: samples that stopped at different distances
    below tol_q are polished onto the root and merge, even at a tight tol_unique."""
    rng = np.random.default_rng(3)
    a = 0.5 * np.linalg.qr(rng.normal(size=(4, 4)))[0]
    u = np.array([[0.1, -0.2, 0.3, 0.05]])
    root = np.linalg.solve(np.eye(4) - a, u[0])

    def linear(u_: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h @ torch.as_tensor(a).T + u_

    fps = find_fixed_points(
        as_step_model(linear, n_states=4, n_inputs=4),
        rng.normal(size=(32, 4)),
        u,
        method=method,
        dtype="float64",
        tol_unique=1e-9,
        max_iters=20000,
    )
    assert fps.n == 1
    np.testing.assert_allclose(fps.xstar[0], root, atol=1e-12)
    assert fps.certified.all()


def test_roots_float32_cannot_certify_are_refined_in_float64_or_explained():
    """tol_q below what float32 resolves at d = 64: every sample stalls at the root; the root is
    certified in float64 from one of them, and where float64 cannot reach tol_q either, the result
    says why."""
    rng = np.random.default_rng(0)
    d = 64
    A = rng.standard_normal((d, d))
    A *= 0.8 / np.abs(np.linalg.eigvals(A)).max()
    b = rng.standard_normal(d)
    x_true = np.linalg.solve(np.eye(d) - A, b)
    x0 = rng.standard_normal((16, d))
    single = find_fixed_points(Linear(A, b=b), x0, dtype="float32", tol_q=1e-14, device="cpu")
    info = single.info
    assert info["n_stalled_at_rounding_floor"] == info["n_stalled"] == 15 and info["n_converged"] == 1
    assert info["n_refined_in_float64"] == 1 and info["warnings"] == []
    assert single.n == 1 and single.certified.all() and single.qstar[0] < 1e-14
    assert "certified in float64 (the search's dtype could not reach tol_q): 1" in single.summary()
    np.testing.assert_allclose(single.xstar[0], x_true, rtol=0, atol=1e-5 * np.abs(x_true).max())

    beyond = find_fixed_points(Linear(A, b=b), x0, dtype="float32", tol_q=1e-40, device="cpu")
    info = beyond.info
    assert beyond.n == 0 and info["n_converged"] == 0 and info["n_refined_in_float64"] == 0
    assert info["n_stalled_at_rounding_floor"] == info["n_stalled"] == 16
    assert len(info["warnings"]) == 1 and "did not converge in float64 either" in info["warnings"][0]
    assert "warning:" in beyond.summary()

    class Float32Only(Linear):  # as a SavedModel, which computes in its signature's dtype only
        def to(self, device=None, dtype=None):
            if dtype == torch.float64:
                raise InvalidModel("this model computes in float32")
            return super().to(device, dtype)

    fixed = find_fixed_points(Float32Only(A, b=b), x0, dtype="float32", tol_q=1e-14, device="cpu")
    assert fixed.n == 0 and fixed.info["n_refined_in_float64"] == 0
    assert "could not be refined in float64: this model computes in float32" in fixed.info["warnings"][0]

    double = find_fixed_points(Linear(A, b=b), x0, dtype="float64", tol_q=1e-14, device="cpu")
    assert double.info["n_converged"] == 16 and double.info["warnings"] == []
    assert double.n == 1 and np.abs(double.xstar[0] - x_true).max() < 1e-9
    assert double.info["n_stalled_at_rounding_floor"] == double.info["n_refined_in_float64"] == 0


def test_slow_points_are_returned_apart_from_fixed_points():
    class Ghost(Tanh):  # a saddle-node ghost: G = 0.01 + h^2 (no root), plus a second, stable axis
        def step(self, h, u):
            return torch.stack([h[:, 0] + 0.01 + h[:, 0] ** 2, 0.5 * h[:, 1]], dim=1)

    fps = find_fixed_points(
        Ghost(np.eye(2)), np.array([[0.5, 1.0], [-0.4, 0.2]]), device="cpu", dtype="float64", q_slow=1e-3
    )
    assert fps.n == 0
    # A minimum of q is located only to the solver's stall step (1e-3, relative): the two samples
    # may end on either side of tol_unique apart, as one slow point or two, all at the ghost.
    assert 1 <= fps.slow_points.n <= 2
    np.testing.assert_allclose(fps.slow_points.xstar, np.zeros((fps.slow_points.n, 2)), atol=3e-3)
    assert (fps.slow_points.qstar < 1e-3).all()
    assert fps.info["n_stalled"] == 2


def test_the_example_in_docs_engine_md_runs():
    text = (ROOT / "docs" / "engine.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/engine.md", "exec"), namespace)
    assert namespace["fps"].n == 9


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["tanh", "gru", "lstm"])
def test_newton_finds_every_flip_flop_point_adam_finds(kind):
    path = ROOT / "tests" / "data" / f"flipflop_{kind}.pt"
    if not path.exists():
        pytest.skip(f"{path.name} not shipped yet")
    model = load_model(path)
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (1024, model.n_states)).astype(np.float32)
    adam = find_fixed_points(model, x0, method="adam", device="cpu")
    newton = find_fixed_points(model, x0, method="auto", device="cpu")
    missing = [x for x in adam.xstar if x not in newton]
    assert not missing, f"newton missed {len(missing)} of {adam.n} points adam found"


@pytest.mark.slow
def test_hundred_thousand_states_in_64_dimensions_run_in_chunks():
    rng = np.random.default_rng(0)
    W = 0.9 * rng.standard_normal((64, 64)) / 8.0
    traj = rng.uniform(-0.5, 0.5, (100, 50, 64))
    x0 = sample_states(traj, 100_000, noise_scale=0.1, rng=0)
    fps = find_fixed_points(Tanh(W), x0, device="cpu", batch_size=None, completeness="none")
    assert fps.info["n_samples"] == 100_000
    assert fps.info["n_converged"] == 100_000
    assert fps.n == 1 and np.abs(fps.xstar).max() < 1e-5


def test_the_time_limit_also_ends_float64_refinement(monkeypatch):
    """A search that ends in time must not overrun in refinement: two input conditions give two
    roots float32 cannot certify, refined one at a time, and the caller's budget runs out while
    the first is refined (each float64 step takes 0.25 s)."""
    rng = np.random.default_rng(0)
    d = 64
    A = rng.standard_normal((d, d))
    A *= 0.8 / np.abs(np.linalg.eigvals(A)).max()
    B, b = rng.standard_normal((1, d)), rng.standard_normal(d)
    x0 = rng.standard_normal((16, d))
    inputs = np.repeat([[0.0], [1.0]], 8, axis=0)

    class SlowInFloat64(Linear):
        def step(self, h, u):
            if h.dtype == torch.float64:
                time.sleep(0.25)
            return super().step(h, u)

    def budget(report):
        if report["phase"] == "refinement":
            raise TimeUp("the job's budget is spent")

    monkeypatch.setattr(precision, "REFINE_MAX_ENTRIES", d * d)  # one point at a time
    search = partial(
        find_fixed_points, SlowInFloat64(A, B=B, b=b), x0, inputs, dtype="float32", tol_q=1e-14, device="cpu"
    )
    complete = search()
    assert complete.info["n_refined_in_float64"] == 2 and complete.info["partial"] is False

    stopped = search(progress=budget)
    info = stopped.info
    assert info["partial"] is True and info["partial_reason"] == "the job's budget is spent"
    assert info["n_refined_in_float64"] == 1 and info["n_stalled_at_rounding_floor"] > 0
    assert "The time limit ended their refinement in float64 with 1 of the 2 distinct points" in info["warnings"][0]
