"""plot(): fixed points in the top-3 PCA space of trajectories, unstable modes as red lines."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from fpf_client import FixedPoints
from fpf_client.plotting import principal_axes, unstable_modes

matplotlib.use("Agg")


def linear_points(dynamics: str = "discrete") -> FixedPoints:
    """Two points of known Jacobians: a stable node, and a saddle unstable along e1 and e4."""
    if dynamics == "discrete":
        spectra = [np.array([0.9, 0.5, 0.2, -0.3]), np.array([1.5, 0.5, 0.2, -1.2])]
    else:
        spectra = [np.array([-0.1, -0.5, -0.2, -2.0]), np.array([0.7, -0.5, -0.2, 0.3])]
    eigvec = np.stack([np.eye(4, dtype=complex) for _ in spectra])
    eigval = np.stack(spectra).astype(complex)
    stable = np.array([np.all(np.abs(s) < 1) if dynamics == "discrete" else np.all(s < 0) for s in spectra])
    return FixedPoints(
        xstar=np.array([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.5, 0.0, 0.0]]),
        J_xstar=np.stack([np.diag(s) for s in spectra]),
        eigval_J_xstar=eigval,
        eigvec_J_xstar=eigvec,
        is_stable=stable,
        dynamics=dynamics,
    )


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_unstable_modes_are_the_eigenvectors_outside_the_stable_region(dynamics):
    fps = linear_points(dynamics)
    assert unstable_modes(fps, 0).shape == (4, 0)
    assert np.array_equal(unstable_modes(fps, 1), np.eye(4)[:, [0, 3]])


def test_principal_axes_find_the_directions_of_largest_variance():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(5000, 4)) * np.array([5.0, 3.0, 0.01, 1.0])
    _, axes = principal_axes(states)
    assert axes.shape == (4, 3)
    np.testing.assert_allclose(np.abs(axes), np.eye(4)[:, [0, 1, 3]], atol=0.02)


def test_plot_draws_trajectories_points_and_modes_in_pca_space():
    fps = linear_points()
    rng = np.random.default_rng(0)
    # Trajectories spread along e1 > e2 > e4 and barely along e3: the PCs are +-e1, +-e2, +-e4.
    trajectories = rng.normal(size=(20, 50, 4)) * np.array([4.0, 2.0, 1e-3, 1.0])
    trajectories -= trajectories.reshape(-1, 4).mean(axis=0)
    figure = fps.plot(trajectories, mode_scale=0.5, max_trajectories=7)
    ax = figure.axes[0]

    blue = [line for line in ax.lines if line.get_color() == "tab:blue"]
    red = [line for line in ax.lines if to_rgba(line.get_color()) == to_rgba("red")]
    assert len(blue) == 7
    assert len(red) == 2  # the saddle's two unstable modes, the node has none

    kept = [0, 1, 3]
    scatters = {tuple(np.round(c.get_facecolor()[0], 3)): np.array(c._offsets3d).T for c in ax.collections}
    stable_xyz = scatters[tuple(np.round(to_rgba("black"), 3))]
    unstable_xyz = scatters[tuple(np.round(to_rgba("red"), 3))]
    np.testing.assert_allclose(np.abs(stable_xyz), np.abs(fps.xstar[[0]][:, kept]), atol=0.05)
    np.testing.assert_allclose(np.abs(unstable_xyz), np.abs(fps.xstar[[1]][:, kept]), atol=0.05)

    # Each mode line is centred on the saddle and spans 2 * mode_scale along e1 or e4 (PC 1 or PC 3).
    spans = sorted((np.abs(np.diff(np.array(line.get_data_3d()), axis=1)).ravel() for line in red), key=np.argmax)
    np.testing.assert_allclose(spans, [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], atol=0.05)
    for line in red:
        np.testing.assert_allclose(np.array(line.get_data_3d()).mean(axis=1), unstable_xyz[0], atol=1e-12)


def test_plot_without_trajectories_uses_the_points_and_saves_with_agg(tmp_path):
    figure = linear_points().plot()
    figure.savefig(tmp_path / "fps.png")
    assert (tmp_path / "fps.png").stat().st_size > 1000


def test_trajectories_of_the_wrong_dimension_are_refused():
    with pytest.raises(ValueError, match=r"\(n_batch, n_time, 4\)"):
        linear_points().plot(np.zeros((2, 5, 3)))
