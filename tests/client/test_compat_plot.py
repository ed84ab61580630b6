"""plot_fps with the reference's options: what lands in the axes, checked line by line.

Points with known Jacobians (diagonal in a rotated basis) give known modes: in three
dimensions the PCA is a rigid map, so lengths and colours can be read back from the lines.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from fpf_client.compat import FixedPoints, plot_fps

ROTATION = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]


def _points() -> FixedPoints:
    """A stable point (modes 0.5, 0.4, 0.3) and a saddle (one mode at 2 along ROTATION[:, 0])."""
    spectra = [np.diag([0.5, 0.4, 0.3]), np.diag([2.0, 0.6, 0.1])]
    J = np.stack([ROTATION @ s @ ROTATION.T for s in spectra])
    return FixedPoints(xstar=np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 0.0]]), J_xstar=J)


def _trajectories() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(5, 20, 3))


def _lines(fig: Figure):
    return fig.axes[0].get_lines()


def test_defaults_draw_trajectories_unstable_modes_and_points(tmp_path):
    fig = plot_fps(
        _points(),
        _trajectories(),
        plot_batch_idx=[0, 2],
        plot_start_time=5,
        plot_stop_time=15,
        mode_scale=0.5,
        fig=Figure(),
    )
    lines = _lines(fig)
    assert len(lines) == 2 + 1 + 2  # two trials, the saddle's one unstable mode, two points
    trials = lines[:2]
    assert all(len(line.get_data_3d()[0]) == 10 for line in trials)
    assert all(to_rgba(line.get_color()) == to_rgba("b") for line in trials)
    mode = np.array(lines[3].get_data_3d()).T  # stable point first (no modes), then the saddle's mode
    assert to_rgba(lines[3].get_color()) == to_rgba("r")
    np.testing.assert_allclose(np.linalg.norm(mode[2] - mode[0]), 2 * 0.5 * 2.0)  # 2 x scale x |lambda|
    stable_point, saddle_point = lines[2], lines[4]
    assert stable_point.get_marker() == "." and to_rgba(stable_point.get_color()) == to_rgba("k")
    assert saddle_point.get_marker() == "None" and to_rgba(saddle_point.get_color()) == to_rgba("r")
    assert [fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel(), fig.axes[0].get_zlabel()] == ["PC 1", "PC 2", "PC 3"]
    path = tmp_path / "fps.png"
    fig.savefig(path)
    pixels = matplotlib.image.imread(path)
    assert pixels.std() > 0.01  # something was drawn


def test_stable_modes_max_n_modes_and_styles():
    fig = plot_fps(
        _points(),
        fig=Figure(),
        do_plot_stable_modes=True,
        max_n_modes=2,
        mode_scale=1.0,
        stable_color="g",
        unstable_color="m",
        unstable_marker="x",
        linewidth=3,
    )
    lines = _lines(fig)
    assert len(lines) == 2 + 1 + 2 + 1  # point 1: two modes + point; point 2: two modes + point
    colors = [to_rgba(line.get_color()) for line in lines]
    assert colors == [to_rgba(c) for c in ("g", "g", "g", "m", "g", "m")]
    lengths = [
        np.linalg.norm(np.diff(np.array(line.get_data_3d()).T[[0, 2]], axis=0))
        for line in lines
        if len(line.get_data_3d()[0]) == 3
    ]
    np.testing.assert_allclose(lengths, [1.0, 0.8, 4.0, 1.2])  # 2 |lambda| of the two leading modes each
    assert lines[5].get_marker() == "x" and all(line.get_linewidth() == 3 for line in lines)
    hidden = plot_fps(_points(), fig=Figure(), do_plot_unstable_fps=False)
    assert len(_lines(hidden)) == 1


def test_two_states_are_drawn_natively():
    fps = FixedPoints(
        xstar=np.array([[0.3, -0.2], [1.0, 0.5]]), J_xstar=np.stack([0.5 * np.eye(2), np.diag([1.5, 0.2])])
    )
    trajectories = np.random.default_rng(2).normal(size=(3, 8, 2))
    fig = plot_fps(fps, trajectories, fig=Figure(), plot_stop_time=100)
    ax = fig.axes[0]
    assert ax.name == "rectilinear" and ax.get_xlabel() == "Hidden 1" and ax.get_ylabel() == "Hidden 2"
    lines = ax.get_lines()
    np.testing.assert_array_equal(lines[0].get_xydata(), trajectories[0])
    np.testing.assert_array_equal(lines[3].get_xydata(), [[0.3, -0.2]])
    np.testing.assert_allclose(lines[4].get_xydata(), [[1.0 - 0.375, 0.5], [1.0, 0.5], [1.375, 0.5]])


def test_points_without_jacobians_are_drawn_in_the_stable_style():
    fig = plot_fps(FixedPoints(xstar=np.zeros((3, 4))), fig=Figure())
    assert len(_lines(fig)) == 3 and all(line.get_marker() == "." for line in _lines(fig))
