"""FixedPoints: selection, de-duplication, summary and exact npz / JSON round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpf_client import FixedPoints


def make_points(k: int = 5, d: int = 3, m: int = 2, seed: int = 0) -> FixedPoints:
    """A fully populated set whose Jacobians are diagonal, so stability is known by construction."""
    rng = np.random.default_rng(seed)
    diag = rng.uniform(-1.8, 1.8, size=(k, d))
    J = np.stack([np.diag(row) for row in diag]).astype(np.float32)
    order = np.argsort(-np.abs(diag), axis=1)
    eigval = np.take_along_axis(diag, order, axis=1).astype(np.complex64)
    eigvec = np.stack([np.eye(d)[:, o] for o in order]).astype(np.complex64)
    n_unstable = (np.abs(diag) > 1).sum(axis=1)
    return FixedPoints(
        xstar=rng.normal(size=(k, d)).astype(np.float32),
        x_init=rng.normal(size=(k, d)).astype(np.float32),
        inputs=np.zeros((k, m), dtype=np.float32),
        F_xstar=rng.normal(size=(k, d)).astype(np.float32),
        qstar=10.0 ** rng.uniform(-16, -12, size=k),
        dq=np.full(k, np.nan),
        n_iters=rng.integers(1, 50, size=k),
        step_norm=np.where(np.arange(k) == 0, np.inf, 1e-9),
        certified=np.arange(k) % 2 == 0,
        J_xstar=J,
        dFdu=rng.normal(size=(k, d, m)).astype(np.float32),
        eigval_J_xstar=eigval,
        eigvec_J_xstar=eigvec,
        is_stable=n_unstable == 0,
        n_unstable=n_unstable,
        is_nonisolated=np.zeros(k, dtype=bool),
        cond_id=np.zeros(k, dtype=np.int64),
        info={"n_samples": 64, "n_converged": 60, "wall_time_s": np.float64(0.25), "method": "lm"},
        slow_points=FixedPoints(xstar=rng.normal(size=(2, d)), qstar=np.array([1e-6, 2e-6])),
    )


def test_npz_round_trip_is_exact(tmp_path):
    fps = make_points()
    fps.save(tmp_path / "fps.npz")
    loaded = FixedPoints.load(tmp_path / "fps.npz")
    assert loaded == fps
    assert loaded.xstar.dtype == np.float32 and loaded.eigval_J_xstar.dtype == np.complex64
    assert FixedPoints.load(fps.to_npz_bytes()) == fps


def test_npz_needs_no_pickles(tmp_path):
    make_points().save(tmp_path / "fps.npz")
    with np.load(tmp_path / "fps.npz", allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)


def test_json_round_trip_is_exact_and_strict():
    fps = make_points()
    text = json.dumps(fps.to_json_dict(), allow_nan=False)  # strict JSON: NaN and inf are spelled out
    loaded = FixedPoints.from_json_dict(json.loads(text))
    assert loaded == fps
    assert np.isnan(loaded.dq).all() and loaded.step_norm[0] == np.inf
    assert loaded.J_xstar.dtype == np.float32 and loaded.certified.dtype == bool


def test_empty_set_keeps_its_shape_through_json_and_npz():
    empty = make_points()[np.zeros(5, dtype=bool)]
    assert len(empty) == 0 and empty.J_xstar.shape == (0, 3, 3)
    assert FixedPoints.from_json_dict(json.loads(json.dumps(empty.to_json_dict()))) == empty
    assert FixedPoints.load(empty.to_npz_bytes()) == empty


def test_equality_notices_a_changed_value_or_dtype():
    fps = make_points()
    other = make_points()
    other.qstar[2] = np.nextafter(other.qstar[2], 1.0)
    assert fps != other
    assert fps != FixedPoints.from_npz_arrays({**fps.to_npz_arrays(), "xstar": fps.xstar.astype(np.float64)})


def test_indexing_by_integer_slice_mask_and_array():
    fps = make_points()
    assert len(fps) == 5 and fps.n_states == 3 and fps.n_inputs == 2
    one = fps[-1]
    assert len(one) == 1 and np.array_equal(one.xstar[0], fps.xstar[4])
    assert np.array_equal(fps[1:3].J_xstar, fps.J_xstar[1:3])
    mask = np.array([True, False, True, False, False])
    assert np.array_equal(fps[mask].qstar, fps.qstar[[0, 2]])
    assert np.array_equal(fps[[3, 0]].n_iters, fps.n_iters[[3, 0]])
    assert [len(p) for p in fps] == [1] * 5


def test_contains_uses_the_max_norm_within_tol_unique():
    fps = make_points()
    point = fps.xstar[2].astype(float)
    assert point in fps
    assert point + 0.9 * fps.tol_unique in fps
    assert point + np.array([1.1 * fps.tol_unique, 0, 0]) not in fps
    assert np.zeros(4) not in fps  # wrong dimension


def test_stable_and_unstable_follow_the_eigenvalues():
    fps = make_points(k=40)
    spectral_radius = np.abs(fps.eigval_J_xstar).max(axis=1)
    assert np.array_equal(fps.stable.xstar, fps.xstar[spectral_radius < 1])
    assert np.array_equal(fps.unstable.xstar, fps.xstar[spectral_radius > 1])
    assert len(fps.stable) + len(fps.unstable) == 40 and len(fps.stable) > 0 and len(fps.unstable) > 0


def test_stable_without_decomposition_says_what_is_missing():
    with pytest.raises(ValueError, match="is_stable"):
        _ = FixedPoints(xstar=np.zeros((2, 3))).stable


def test_unique_merges_near_duplicates_keeping_the_lowest_q():
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    xstar = np.concatenate([base, base + 4e-4, base[:1] + 2e-3])  # the last is a distinct point at tol 1e-3
    qstar = np.array([3.0, 1.0, 5.0, 2.0, 4.0, 0.5, 9.0]) * 1e-14
    unique = FixedPoints(xstar=xstar, qstar=qstar, tol_unique=1e-3).unique()
    assert len(unique) == 4
    # Keeps row 3 (q 2e-14 < 3e-14), row 1, row 5 (0.5e-14 < 5e-14) and the distinct row 6, in input order.
    assert np.array_equal(unique.xstar, xstar[[1, 3, 5, 6]])
    assert len(FixedPoints(xstar=xstar, qstar=qstar).unique(tol=1e-2)) == 3


def test_concatenate_joins_rows_and_drops_fields_missing_from_a_part():
    full = make_points(k=3)
    bare = FixedPoints(xstar=np.ones((2, 3), dtype=np.float32), qstar=np.zeros(2))
    joined = FixedPoints.concatenate([full, bare])
    assert len(joined) == 5
    assert np.array_equal(joined.xstar[3:], bare.xstar) and np.array_equal(joined.qstar[:3], full.qstar)
    assert joined.J_xstar is None and joined.info == {}
    with pytest.raises(ValueError):
        FixedPoints.concatenate([])


def test_summary_counts_stability_modes_and_run_info(capsys):
    fps = make_points(k=40)
    n_stable = int(fps.is_stable.sum())
    fps.print_summary()
    text = capsys.readouterr().out
    assert text.startswith("40 fixed points in 3 dimensions (discrete)")
    assert f"{n_stable} stable, {40 - n_stable} unstable" in text
    counts = np.bincount(fps.n_unstable)
    assert f"{counts[1]} with 1" in text
    assert "slow points (not fixed points): 2" in text
    assert "n_converged: 60" in text and "wall_time_s: 0.25" in text
