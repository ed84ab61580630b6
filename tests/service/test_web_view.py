"""The web page's view of a result: counts, projection and modes against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fpf_client import FixedPoints
from service.gateway.web.view import MAX_SPECTRUM_VALUES, MODE_SCALE, principal_axes, result_view


def _svd_projection(states: np.ndarray) -> np.ndarray:
    """Coordinates in the top three principal components by a full SVD (the reference)."""
    centered = states - states.mean(axis=0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    return centered @ vt[:3].T


def _same_up_to_sign(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> None:
    for column in range(a.shape[1]):
        sign = np.sign(a[:, column] @ b[:, column]) or 1.0
        np.testing.assert_allclose(a[:, column], sign * b[:, column], atol=atol)


@pytest.mark.parametrize("k, d", [(50, 8), (6, 40), (600, 400)])
def test_projection_matches_a_full_svd(k: int, d: int) -> None:
    """Exactly by either Gram matrix for small sets, by subspace iteration for large ones."""
    rng = np.random.default_rng(0)
    scales = np.concatenate([[5.0, 4.0, 3.0], np.linspace(1.0, 0.1, d - 3)])
    states = rng.normal(size=(k, d)) * scales @ np.linalg.qr(rng.normal(size=(d, d)))[0]
    mean, axes = principal_axes(states)
    _same_up_to_sign((states - mean) @ axes, _svd_projection(states), atol=1e-6 * np.abs(states).max())
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)


def _saved(tmp_path: Path, fps: FixedPoints) -> Path:
    path = tmp_path / "result.npz"
    fps.save(path)
    return path


def test_counts_modes_and_hover_data_of_a_small_result(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    k, d = 5, 6
    xstar = rng.normal(size=(k, d))
    # Point i has i unstable modes (|lambda| = 2) along the first i coordinate axes, the rest at 0.5.
    eigval = np.full((k, d), 0.5, dtype=np.complex128)
    eigvec = np.tile(np.eye(d, dtype=np.complex128), (k, 1, 1))
    for i in range(k):
        eigval[i, :i] = 2.0
    n_unstable = np.arange(k)
    qstar = np.array([1e-14, 2e-13, np.nan, 3e-15, 1e-16])
    fps = FixedPoints(
        xstar=xstar,
        qstar=qstar,
        eigval_J_xstar=eigval,
        eigvec_J_xstar=eigvec,
        is_stable=n_unstable == 0,
        n_unstable=n_unstable,
        certified=np.array([1, 1, 0, 1, 1], bool),
        is_nonisolated=np.array([0, 0, 0, 0, 1], bool),
        info={"discovery_curve": {"n_initial_states": [1, 2], "n_certified_roots": [1, 4]}},
        slow_points=FixedPoints(xstar=rng.normal(size=(2, d)), qstar=np.array([1e-5, 2e-5])),
    )
    view = result_view(_saved(tmp_path, fps))
    json.dumps(view, allow_nan=False)  # strict JSON: NaN became null

    assert view["counts"] == {
        "fixed_points": 5,
        "stable": 1,
        "saddles_by_index": {"1": 1, "2": 1, "3": 1, "4": 1},
        "non_isolated": 1,
        "slow_points": 2,
        "certified": 4,
    }
    assert view["points"]["q"][2] is None
    assert view["points"]["leading_eigvals"][3] == [[2.0, 0.0], [2.0, 0.0], [2.0, 0.0]]
    assert view["discovery_curve"] == {"n_initial_states": [1, 2], "n_certified_roots": [1, 4]}
    coords = np.stack([view["points"][a] for a in "xyz"], axis=1)
    _same_up_to_sign(coords, _svd_projection(xstar))

    # At most three modes per point: 1 + 2 + 3 + 3 segments, each centred on its point, along e_j.
    modes = view["modes"]
    assert modes["point"] == [1, 2, 2, 3, 3, 3, 4, 4, 4]
    mean, axes = principal_axes(xstar)
    half = MODE_SCALE * np.sqrt(np.mean(np.sum((xstar - mean) ** 2, axis=1)))
    for n, (point, j) in enumerate(zip(modes["point"], [0, 0, 1, 0, 1, 2, 0, 1, 2])):
        ends = np.array([modes[a][n] for a in "xyz"]).T
        np.testing.assert_allclose(ends.mean(axis=0), coords[point], atol=1e-9)
        np.testing.assert_allclose(np.abs(ends[1] - ends[0]), np.abs(2 * half * axes[j]), atol=1e-9)
    assert len(view["slow_points"]["x"]) == 2


def test_spectra_stay_bounded_for_thousands_of_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    k, d = 2000, 64
    eigval = (rng.normal(size=(k, d)) + 1j * rng.normal(size=(k, d))).astype(np.complex64)
    fps = FixedPoints(
        xstar=rng.normal(size=(k, d)).astype(np.float32),
        eigval_J_xstar=eigval,
        is_stable=np.ones(k, bool),
        n_unstable=np.zeros(k, int),
    )
    spectra = result_view(_saved(tmp_path, fps))["spectra"]
    assert spectra["per_point"] == MAX_SPECTRUM_VALUES // k
    assert len(spectra["re"]) == len(spectra["point"]) == k * spectra["per_point"] <= MAX_SPECTRUM_VALUES
    np.testing.assert_allclose(spectra["im"][: spectra["per_point"]], eigval[0, : spectra["per_point"]].imag, rtol=1e-6)


def test_a_result_without_jacobians_has_points_and_no_spectra(tmp_path: Path) -> None:
    view = result_view(_saved(tmp_path, FixedPoints(xstar=np.array([[0.0, 1.0]]), qstar=np.array([0.0]))))
    assert view["counts"]["fixed_points"] == 1 and view["counts"]["stable"] is None
    assert view["spectra"] is None and view["modes"] is None
    assert [view["points"][a] for a in "xyz"] == [[0.0], [0.0], [0.0]]
