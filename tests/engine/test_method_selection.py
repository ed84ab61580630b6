"""What runs: ``auto`` resolves to a named solver and says so; ``newton`` is its deprecated name; the
restarts and the float64 refinement run where their options say, whatever the method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_solvers import Linear, Tanh, grid, roll_weights

from fpf_client.options import FinderOptions
from workers.engine import find_fixed_points, load_model

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def flipflop() -> tuple[object, np.ndarray]:
    """The shipped 16-unit flip-flop, and initial states around its eight memories."""
    model = load_model(DATA / "flipflop_tanh.pt")
    corners = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=float)
    rng = np.random.default_rng(0)
    states = rng.normal(size=(128, 16)) * 0.5 + rng.choice(corners, 128) @ rng.normal(size=(3, 16)) * 0.3
    return model, states


def _linear_network(d: int) -> tuple[Linear, np.ndarray, np.ndarray]:
    """A contracting affine map x -> A x + b, initial states, and its one root (float64)."""
    rng = np.random.default_rng(d)
    A = rng.standard_normal((d, d))
    A *= 0.8 / np.abs(np.linalg.eigvals(A)).max()
    b = rng.standard_normal(d)
    return Linear(A, b=b), rng.standard_normal((8, d)), np.linalg.solve(np.eye(d) - A, b)


@pytest.mark.parametrize(("d", "expected"), [(8, "lm"), (64, "lm_krylov")])
def test_auto_resolves_by_size_and_names_the_solver_that_ran(d: int, expected: str) -> None:
    model, x0, _ = _linear_network(d)
    fps = find_fixed_points(model, x0, device="cpu")
    assert FinderOptions().method == "auto"
    assert fps.info["method"] == expected and fps.n == 1 and fps.certified.all()


def test_newton_is_the_deprecated_name_of_auto() -> None:
    with pytest.warns(DeprecationWarning, match="method='newton' is now called 'auto'"):
        options = FinderOptions(method="newton")
    assert options.method == "auto"
    assert FinderOptions.model_validate_json('{"method": "auto"}') == options
    W = roll_weights(3)
    with pytest.warns(DeprecationWarning):
        old = find_fixed_points(Tanh(W), grid(3), method="newton", device="cpu")
    new = find_fixed_points(Tanh(W), grid(3), method="auto", device="cpu")
    assert old.info["method"] == new.info["method"] == "lm"
    np.testing.assert_array_equal(old.xstar, new.xstar)


def test_restarts_follow_the_completeness_option_not_the_method_name(flipflop) -> None:
    model, x0 = flipflop
    by_default = find_fixed_points(model, x0, np.zeros((1, 3)), method="lm_krylov", device="cpu")
    asked = find_fixed_points(model, x0, np.zeros((1, 3)), method="lm_krylov", completeness="midpoints", device="cpu")
    declined = find_fixed_points(model, x0, np.zeros((1, 3)), completeness="none", device="cpu")
    assert by_default.info["completeness_passes"] == 0 and by_default.info["n_restarts"] == 0
    assert asked.info["completeness_passes"] >= 1 and asked.info["n_restarts"] > 0
    assert declined.info["completeness_passes"] == 0 and declined.info["method"] == "lm"
    # the restarts find saddles the first pass missed: never fewer points, all of the first pass's kept
    assert asked.n >= by_default.n and all(x in asked for x in by_default.xstar)


def test_refinement_follows_its_option_for_every_method() -> None:
    """tol_q below what float32 resolves at d = 64: only float64 refinement can certify the root."""
    model, x0, root = _linear_network(64)
    search = {"dtype": "float32", "tol_q": 1e-14, "device": "cpu"}
    refined = find_fixed_points(model, x0, **search)
    skipped = find_fixed_points(model, x0, refinement="none", **search)
    adam = find_fixed_points(model, x0, method="adam", max_iters=3000, refinement="float64", **search)
    assert refined.info["n_refined_in_float64"] == 1 and refined.n == 1 and refined.qstar[0] < 1e-14
    assert skipped.info["n_refined_in_float64"] == 0 and skipped.info["n_stalled_at_rounding_floor"] > 0
    assert adam.info["n_refined_in_float64"] >= 1 and adam.n == 1 and adam.certified.all()
    np.testing.assert_allclose(refined.xstar[0], root, atol=1e-6)
