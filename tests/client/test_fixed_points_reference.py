"""FixedPoints' reference methods (find, get_unique, transform, update, ...) and the safe .fps reader.

Expectations are worked out from the definitions: distances, affine maps and eigenvalues of
matrices built with known spectra.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from fpf_client.compat import FixedPoints, UnsafePickle, read_fps, read_fps_dict
from fpf_client.fixed_points import FixedPoints as NativeFixedPoints


def _points() -> FixedPoints:
    xstar = np.array([[0.0, 0.0], [0.0008, 0.0008], [1.0, 0.0], [0.0, 0.0]])
    inputs = np.array([[0.0], [0.0], [0.0], [1.0]])
    return FixedPoints(
        xstar=xstar,
        x_init=xstar + 1,
        inputs=inputs,
        F_xstar=xstar * 2,
        qstar=np.array([3.0, 1.0, 2.0, 4.0]),
        cond_id=np.array([5, 5, 6, 7]),
    )


def test_find_and_contains_use_the_two_norm_of_state_and_input():
    fps = _points()
    # (0.0008, 0.0008) is 0.00113 from the origin in 2-norm (beyond tol 1e-3), 0.0008 in max-norm
    assert fps.find(fps[0]).tolist() == [0]
    assert fps[0] in fps and fps[3] in fps
    assert FixedPoints(xstar=np.array([[0.0, 0.0005]]), inputs=np.array([[0.0]])) in fps
    assert FixedPoints(xstar=np.array([[0.0, 0.0]]), inputs=np.array([[0.5]])) not in fps
    assert FixedPoints(xstar=np.zeros((1, 3)), inputs=np.zeros((1, 1))) not in fps  # other dimension
    assert fps.find(FixedPoints(xstar=np.zeros((1, 3)))).size == 0
    assert np.array([0.0, 0.0009]) in fps  # a bare state: max-norm, as before


def test_get_unique_keeps_the_lowest_q_of_each_group_and_tells_inputs_apart():
    fps = _points()
    fps.xstar[1] = [0.0006, 0.0]  # now within 1e-3 of point 0 (2-norm): one group, q 1 < 3
    unique = fps.get_unique()
    assert unique.qstar.tolist() == [1.0, 2.0, 4.0]
    assert unique.cond_id.tolist() == [5, 6, 7]  # same x, other input: kept apart
    assert _points().get_unique().n == 4  # 0.00113 apart in 2-norm: distinct (max-norm unique() merges them)
    assert _points().unique().n == 2  # fpf's unique(): states only, max-norm


def test_transform_maps_states_and_eigenvectors():
    J = np.array([[[0.5, 0.2], [0.0, 1.5]]])
    fps = FixedPoints(
        xstar=np.array([[1.0, 2.0]]), x_init=np.array([[0.0, 1.0]]), F_xstar=np.array([[1.0, 2.0]]), J_xstar=J
    )
    fps.decompose_jacobians()
    U, offset = np.array([[1.0, 0.0, 2.0], [0.0, -1.0, 1.0]]), np.array([10.0, 0.0, -1.0])
    moved = fps.transform(U, offset)
    np.testing.assert_allclose(moved.xstar, [[11.0, -2.0, 3.0]])
    np.testing.assert_allclose(moved.x_init, [[10.0, -1.0, 0.0]])
    np.testing.assert_allclose(moved.eigvec_J_xstar[0], U.T @ fps.eigvec_J_xstar[0])
    assert moved.eigval_J_xstar is fps.eigval_J_xstar and fps.xstar.shape == (1, 2)


def test_decompose_jacobians_sorts_by_magnitude_and_judges_stability():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 3))
    spectra = [np.array([0.2, -0.9, 0.5]), np.array([0.3, 1.7, -0.1])]
    J = np.stack([basis @ np.diag(s) @ np.linalg.inv(basis) for s in spectra])
    fps = FixedPoints(xstar=np.zeros((2, 3)), J_xstar=J)
    assert not fps.has_decomposed_jacobians
    fps.decompose_Jacobians()
    np.testing.assert_allclose(fps.eigval_J_xstar.real, [[-0.9, 0.5, 0.2], [1.7, 0.3, -0.1]], atol=1e-10)
    assert fps.is_stable.tolist() == [True, False] and fps.n_unstable.tolist() == [0, 1]
    for k in range(2):  # columns are eigenvectors of their eigenvalues
        np.testing.assert_allclose(
            J[k] @ fps.eigvec_J_xstar[k], fps.eigvec_J_xstar[k] * fps.eigval_J_xstar[k], atol=1e-10
        )
    nan = FixedPoints(xstar=np.zeros((1, 2)), J_xstar=np.full((1, 2, 2), np.nan))
    nan.decompose_jacobians()
    assert np.isnan(nan.eigval_J_xstar).all() and nan.is_stable.tolist() == [False]


def test_update_setitem_and_the_small_api():
    fps = _points()
    extra = fps[[2]]
    fps.update(extra)
    assert fps.n == 5 and fps.qstar[-1] == 2.0
    fps[0] = fps[3]
    np.testing.assert_array_equal(fps.inputs[0], [1.0])
    assert fps.cond_id[0] == 7
    assert fps[1].is_single_fixed_point and not fps.is_single_fixed_point
    copy = FixedPoints(**fps.kwargs)
    assert copy == fps
    with pytest.raises(ValueError, match="fields differ"):
        fps.update(FixedPoints(xstar=np.zeros((1, 2))))
    with pytest.raises(TypeError):
        fps[0] = np.zeros(2)
    fps.assert_valid_shapes()
    fps.qstar = fps.qstar[:2]
    with pytest.raises(ValueError, match="qstar has"):
        fps.assert_valid_shapes()


def test_print_shapes(capsys: pytest.CaptureFixture[str]):
    _points().print_shapes()
    out = capsys.readouterr().out
    assert "xstar: (4, 2)" in out and "inputs: (4, 1)" in out and "J_xstar: None" in out


def test_reference_constructor_forms():
    empty = FixedPoints()
    assert empty.n == 0
    blank = FixedPoints(do_alloc_nan=True, n=3, n_states=4, n_inputs=2, dtype=np.float64)
    assert blank.xstar.shape == (3, 4) and np.isnan(blank.J_xstar).all() and blank.inputs.shape == (3, 2)
    assert blank.eigval_J_xstar.dtype == np.complex128 and blank.dtype is np.float64
    with pytest.raises(ValueError, match="n_states"):
        FixedPoints(do_alloc_nan=True, n=3)
    assert FixedPoints(xstar=np.zeros((2, 3), dtype=np.float32)).dtype is np.float32
    positional = FixedPoints(np.ones((2, 3)), np.zeros((2, 3)), np.zeros((2, 1)))  # the reference's order
    assert positional.x_init.shape == (2, 3) and positional.n_inputs == 1
    both = FixedPoints.concatenate([_points(), _points()])
    assert both.n == 8 and isinstance(both, NativeFixedPoints)


def _reference_style_file(path, protocol: int) -> dict:
    """What the reference's FixedPoints.save writes: its attribute dict, pickled."""
    data = {
        "xstar": np.arange(6, dtype=np.float32).reshape(3, 2),
        "inputs": np.zeros((3, 1), dtype=np.float32),
        "qstar": np.array([1e-13, 2e-13, 3e-14], dtype=np.float32),
        "n_iters": np.array([5.0, 5.0, 5.0]),
        "J_xstar": np.tile(np.eye(2, dtype=np.float32) * 0.5, (3, 1, 1)),
        "eigval_J_xstar": np.full((3, 2), 0.5 + 0j, dtype=np.complex64),
        "eigvec_J_xstar": None,
        "is_stable": np.array([1.0, 1.0, 1.0]),
        "cond_id": None,
        "tol_unique": 1e-3,
        "dtype": np.float32,
        "dtype_complex": np.complex64,
        "verbose": False,
        "do_alloc_nan": False,
        "n": 3,
        "n_states": 2,
        "n_inputs": 1,
    }
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return data


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_reference_fps_files_are_read(tmp_path, protocol: int):
    path = tmp_path / "points.fps"
    data = _reference_style_file(path, protocol)
    assert read_fps_dict(path)["dtype"] is np.float32
    fps = read_fps(path)
    np.testing.assert_array_equal(fps.xstar, data["xstar"])
    np.testing.assert_array_equal(fps.J_xstar, data["J_xstar"])
    assert fps.is_stable.dtype == bool and fps.is_stable.all() and fps.cond_id is None
    restored = FixedPoints()
    restored.restore(path)
    np.testing.assert_array_equal(restored.qstar, data["qstar"])
    # fpf's own format round-trips through the reference's save/restore names
    restored.save(tmp_path / "points.npz")
    again = FixedPoints()
    again.restore(tmp_path / "points.npz")
    assert again == restored


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_hostile_pickle_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    payload = _Payload()
    payload.target = target
    path = tmp_path / "evil.fps"
    path.write_bytes(pickle.dumps({"xstar": np.zeros((1, 2)), "hook": payload}))
    with pytest.raises(UnsafePickle, match=r"refusing to load (posix|os)\.system"):
        read_fps(path)
    assert not target.exists()
    path.write_bytes(pickle.dumps({"xstar": np.zeros((1, 2)), "when": __import__("datetime").date(2020, 1, 1)}))
    with pytest.raises(UnsafePickle, match=r"datetime\.date"):
        FixedPoints().restore(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=r"not a FixedPointFinder \.fps file"):
        read_fps(path)
