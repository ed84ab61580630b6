"""The walkthrough's figures: eigenvalue spectra against the stability boundary, and one task trial."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_rgba

from fpf_client import FixedPoints
from fpf_client.plotting import plot_eigenvalues, plot_trial

matplotlib.use("Agg")


def spectra(dynamics: str) -> FixedPoints:
    """A stable point and a saddle with known spectra (a complex pair each)."""
    if dynamics == "discrete":
        eigval = np.array([[0.5 + 0.5j, 0.5 - 0.5j, -0.2], [1.8, 0.3 + 0.1j, 0.3 - 0.1j]])
    else:
        eigval = np.array([[-0.5 + 2j, -0.5 - 2j, -1.0], [0.7, -0.3 + 0.1j, -0.3 - 0.1j]])
    return FixedPoints(
        xstar=np.zeros((2, 3)), eigval_J_xstar=eigval, is_stable=np.array([True, False]), dynamics=dynamics
    )


def _offsets(ax) -> np.ndarray:
    return np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])


@pytest.mark.parametrize("dynamics", ["discrete", "continuous"])
def test_eigenvalues_go_to_the_panel_of_their_point(dynamics: str) -> None:
    fps = spectra(dynamics)
    stable_ax, unstable_ax = plot_eigenvalues(fps, title="spectra").axes
    for ax, values, color in ((stable_ax, fps.eigval_J_xstar[0], "black"), (unstable_ax, fps.eigval_J_xstar[1], "red")):
        drawn = _offsets(ax)
        expected = np.stack([values.real, values.imag], axis=1)
        assert sorted(map(tuple, drawn.round(9))) == sorted(map(tuple, expected.round(9)))
        assert all(to_rgba(c.get_facecolor()[0])[:3] == to_rgba(color)[:3] for c in ax.collections)
    # Only the saddle's unstable eigenvalue is drawn as a large marker.
    large = [c for c in unstable_ax.collections if len(c.get_offsets()) and c.get_sizes()[0] > 20]
    assert len(large) == 1 and large[0].get_offsets().tolist() == [[fps.eigval_J_xstar[1, 0].real, 0.0]]


def test_the_unit_circle_bounds_a_discrete_map_and_the_imaginary_axis_a_flow() -> None:
    circle = [line for line in plot_eigenvalues(spectra("discrete")).axes[0].lines if line.get_label() == "unit circle"]
    x, y = circle[0].get_data()
    np.testing.assert_allclose(np.hypot(x, y), 1.0)
    axis = [
        line for line in plot_eigenvalues(spectra("continuous")).axes[0].lines if line.get_label() == "imaginary axis"
    ]
    assert np.array_equal(axis[0].get_xdata(), [0, 0])


def test_eigenvalues_need_the_decomposition() -> None:
    with pytest.raises(ValueError, match="eigval_J_xstar was not computed"):
        plot_eigenvalues(FixedPoints(xstar=np.zeros((1, 2)), is_stable=np.array([True])))


def test_trial_draws_pulses_targets_and_outputs_per_channel(tmp_path: Path) -> None:
    inputs = np.zeros((20, 2))
    inputs[[0, 7], 0], inputs[[0, 12], 1] = [1, -1], [-1, 1]
    targets = np.stack([np.where(np.arange(20) < 7, 1.0, -1.0), np.where(np.arange(20) < 12, -1.0, 1.0)], axis=1)
    outputs = 0.9 * targets
    figure = plot_trial(inputs, targets, outputs, title="a trial")
    assert len(figure.axes) == 2
    for channel, ax in enumerate(figure.axes):
        drawn = {line.get_label(): line for line in ax.lines}
        np.testing.assert_array_equal(drawn["output"].get_ydata(), outputs[:, channel])
        np.testing.assert_array_equal(drawn["target"].get_ydata(), targets[:, channel])
        pulses = ax.collections[0].get_segments()  # one vertical bar from 0 to each pulse
        assert [(s[0, 0], s[1, 1]) for s in pulses] == [
            (t, inputs[t, channel]) for t in np.flatnonzero(inputs[:, channel])
        ]
    figure.savefig(tmp_path / "trial.png")
    assert (tmp_path / "trial.png").stat().st_size > 10_000


def test_trial_arrays_must_share_their_shape() -> None:
    with pytest.raises(ValueError, match="must share"):
        plot_trial(np.zeros((5, 3)), np.zeros((5, 3)), np.zeros((5, 2)))
