"""``plot_fps``: the reference's figure of fixed points, their modes and the network's trajectories.

With three or more states everything is drawn in the top-3 principal components of the
trajectories (of the fixed points when none are given); with one or two states, in the
states themselves. Each point's leading ``max_n_modes`` eigenmodes (by |lambda|) are drawn as
segments through it, of half-length ``mode_scale * |lambda|``: unstable ones always, stable ones
with ``do_plot_stable_modes``. A new figure is made with pyplot, as the reference does, so that
it shows in notebooks and with ``plt.show()``; nothing is shown or paused here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..fixed_points import FixedPoints
from ..plotting import principal_axes


def plot_fps(
    fps: FixedPoints,
    state_traj: np.ndarray | None = None,
    plot_batch_idx: Any = None,
    plot_start_time: int = 0,
    plot_stop_time: int | None = None,
    mode_scale: float = 0.25,
    fig: Any = None,
    *,
    max_n_modes: int = 3,
    do_plot_unstable_fps: bool = True,
    do_plot_stable_modes: bool = False,
    stable_color: Any = "k",
    stable_marker: str | None = ".",
    unstable_color: Any = "r",
    unstable_marker: str | None = None,
    **kwargs: Any,
) -> Any:
    """Draw the fixed points (and trajectories) as FixedPointFinder's ``plot_fps`` does.

    Parameters
    ----------
    fps : FixedPoints
    state_traj : ndarray, (n_batch, n_time, n_states), optional
        Trajectories to draw (all of them fit the PCA).
    plot_batch_idx : sequence of int, optional
        The trials to draw; all by default.
    plot_start_time, plot_stop_time : int
        The time steps drawn, ``[start, stop)`` (stop: n_time by default).
    mode_scale : float
        Each mode's segment runs ``mode_scale * |lambda|`` each way from its point.
    fig : matplotlib Figure, optional
        Draw on this figure (a new 6 x 6 inch one by default).
    max_n_modes : int
        Modes considered per point, by decreasing |lambda|.
    do_plot_unstable_fps, do_plot_stable_modes : bool
        Draw unstable points at all; draw the stable modes among the leading ones too.
    stable_color, stable_marker, unstable_color, unstable_marker
        Colour and marker of stable and unstable points (and of stable and unstable modes).
        An unstable point has no marker by default: its modes show it.
    **kwargs
        Passed to every ``ax.plot`` of a point or mode.

    Returns
    -------
    matplotlib.figure.Figure
    """
    n_states = fps.n_states
    trials = None
    if state_traj is not None:
        state_traj = np.asarray(state_traj)
        if state_traj.ndim != 3 or state_traj.shape[2] != n_states:
            raise ValueError(f"state_traj must be (n_batch, n_time, {n_states}), got {state_traj.shape}")
        n_batch, n_time = state_traj.shape[:2]
        stop = n_time if plot_stop_time is None else min(plot_stop_time, n_time)
        times = np.arange(max(plot_start_time, 0), stop)
        trials = range(n_batch) if plot_batch_idx is None else plot_batch_idx

    if n_states >= 3:
        fit_on = state_traj.reshape(-1, n_states) if state_traj is not None else fps.xstar
        mean, axes = principal_axes(np.asarray(fit_on, dtype=float))
        if axes.shape[1] < 3:  # fewer points than 3 directions: complete the basis orthonormally
            axes = np.linalg.qr(np.concatenate([axes, np.eye(n_states)], axis=1))[0][:, :3]

        def project(states: np.ndarray) -> np.ndarray:
            projected: np.ndarray = (np.asarray(states, dtype=float) - mean) @ axes
            return projected
    else:

        def project(states: np.ndarray) -> np.ndarray:
            return np.asarray(states, dtype=float)

    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(6, 6), tight_layout=True)
    if n_states >= 3:
        ax = fig.add_subplot(111, projection="3d")
        for label, setter in zip(("PC 1", "PC 2", "PC 3"), (ax.set_xlabel, ax.set_ylabel, ax.set_zlabel), strict=True):
            setter(label, fontweight="bold")
    else:
        ax = fig.add_subplot(111)
        ax.set_xlabel("Hidden 1", fontweight="bold")
        if n_states == 2:
            ax.set_ylabel("Hidden 2", fontweight="bold")

    if trials is not None and state_traj is not None:
        for trial in trials:
            _plot(ax, project(state_traj[trial][times]), color="b", linewidth=0.2)

    styles = _Styles(stable_color, stable_marker, unstable_color, unstable_marker)
    for index in range(fps.n):
        _plot_point(
            ax, fps, index, project, mode_scale, max_n_modes, do_plot_unstable_fps, do_plot_stable_modes, styles, kwargs
        )
    return fig


class _Styles:
    def __init__(self, stable_color: Any, stable_marker: Any, unstable_color: Any, unstable_marker: Any) -> None:
        self.stable = (stable_color, stable_marker)
        self.unstable = (unstable_color, unstable_marker)


def _plot_point(
    ax: Any,
    fps: FixedPoints,
    index: int,
    project: Any,
    scale: float,
    max_n_modes: int,
    do_plot_unstable_fps: bool,
    do_plot_stable_modes: bool,
    styles: _Styles,
    kwargs: dict[str, Any],
) -> None:
    """One point and its leading modes (the point alone, in the stable style, without a Jacobian)."""
    xstar = fps.xstar[index]
    if fps.J_xstar is None and fps.eigval_J_xstar is None:
        color, marker = styles.stable
        _plot(ax, project(xstar[None]), color=color, marker=marker, markersize=12, **kwargs)
        return
    if not fps.has_decomposed_jacobians:
        fps.decompose_jacobians()
    eigval, eigvec = fps._require("eigval_J_xstar")[index], fps._require("eigvec_J_xstar")[index]
    continuous = fps.dynamics == "continuous"
    outside = eigval.real >= 0 if continuous else np.abs(eigval) >= 1
    stable = not outside.any()
    if not stable and not do_plot_unstable_fps:
        return
    for mode in np.argsort(-np.abs(eigval), kind="stable")[:max_n_modes]:
        if not (outside[mode] or do_plot_stable_modes):
            continue
        reach = scale * np.abs(eigval[mode]) * np.real(eigvec[:, mode])
        color = styles.unstable[0] if outside[mode] else styles.stable[0]
        _plot(ax, project(np.stack([xstar - reach, xstar, xstar + reach])), color=color, **kwargs)
    color, marker = styles.stable if stable else styles.unstable
    _plot(ax, project(xstar[None]), color=color, marker=marker, markersize=12, **kwargs)


def _plot(ax: Any, z: np.ndarray, **style: Any) -> None:
    """Plot rows of ``z`` (1, 2 or 3 columns) on ``ax``."""
    if z.shape[1] >= 3:
        ax.plot(z[:, 0], z[:, 1], z[:, 2], **style)
    elif z.shape[1] == 2:
        ax.plot(z[:, 0], z[:, 1], **style)
    else:
        ax.plot(z[:, 0], **style)
