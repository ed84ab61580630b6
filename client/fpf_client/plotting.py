"""Figures of fixed points and of the task a network solves.

:func:`plot_fixed_points` is the picture of FixedPointFinder's ``plot_fps``: the points in the top-3
principal-component space of the network's trajectories, trajectories in blue, stable points black,
unstable ones red with their unstable modes as short lines. :func:`plot_eigenvalues` draws the
Jacobians' spectra against the stability boundary, :func:`plot_trial` one trial of a task.
matplotlib is an optional extra (``pip install fpf-client[plot]``); only its object API is used,
so any backend, Agg included, works, and no figure is left open in pyplot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .fixed_points import FixedPoints


def principal_axes(states: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and the top principal directions (d, k) of ``states: (n, d)``, k = min(n_components, d)."""
    mean = states.mean(axis=0)
    _, _, vt = np.linalg.svd(states - mean, full_matrices=False)
    return mean, vt[: min(n_components, states.shape[1])].T


def unstable_modes(fixed_points: FixedPoints, index: int) -> np.ndarray:
    """Unit eigenvectors (d, r) of point ``index`` whose eigenvalues are unstable.

    Unstable means |lambda| > 1 for a discrete map, Re lambda > 0 for a continuous flow; a complex
    pair contributes the real part of its eigenvector.
    """
    if fixed_points.eigval_J_xstar is None or fixed_points.eigvec_J_xstar is None:
        raise ValueError("the fixed points carry no eigen-decomposition (do_decompose_jacobians=False)")
    eigval = fixed_points.eigval_J_xstar[index]
    eigvec = fixed_points.eigvec_J_xstar[index]
    outside = eigval.real > 0 if fixed_points.dynamics == "continuous" else np.abs(eigval) > 1
    modes = np.real(eigvec[:, outside])
    norms = np.linalg.norm(modes, axis=0)
    unit: np.ndarray = modes[:, norms > 0] / norms[norms > 0]
    return unit


def plot_fixed_points(
    fixed_points: FixedPoints,
    trajectories: np.ndarray | None = None,
    *,
    mode_scale: float = 0.1,
    max_trajectories: int | None = 100,
    title: str | None = None,
    ax: Any = None,
) -> Figure:
    """Draw fixed points (and trajectories) in the top-3 PCA space of the trajectories.

    Parameters
    ----------
    fixed_points : FixedPoints
    trajectories : ndarray, (n_batch, n_time, n_states), optional
        Network states over time; the PCA is fitted to them (to the fixed points when absent).
    mode_scale : float
        Half-length, in state units, of the line drawn along each unstable mode.
    max_trajectories : int, optional
        Draw at most this many trajectories (all are used for the PCA).
    title : str, optional
    ax : mpl_toolkits.mplot3d.Axes3D, optional
        Draw here instead of on a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    xstar = fixed_points.xstar
    if trajectories is not None:
        trajectories = np.asarray(trajectories, dtype=float)
        if trajectories.ndim != 3 or trajectories.shape[2] != fixed_points.n_states:
            raise ValueError(
                f"trajectories must be (n_batch, n_time, {fixed_points.n_states}), got {trajectories.shape}"
            )
    fit_on = trajectories.reshape(-1, trajectories.shape[2]) if trajectories is not None else xstar
    mean, axes = principal_axes(fit_on)

    def project(states: np.ndarray) -> np.ndarray:
        coords = (states - mean) @ axes
        return np.pad(coords, [(0, 0), (0, 3 - coords.shape[1])])  # fewer than 3 dimensions: flat

    if ax is None:
        figure = _figure_class()(figsize=(7, 7))
        ax = figure.add_subplot(projection="3d")
    else:
        figure = ax.figure
    if trajectories is not None:
        for n, trajectory in enumerate(trajectories[:max_trajectories]):
            ax.plot(
                *project(trajectory).T,
                color="tab:blue",
                linewidth=0.5,
                alpha=0.5,
                label="trajectories" if n == 0 else None,
            )

    stable = fixed_points.is_stable.astype(bool) if fixed_points.is_stable is not None else None
    points = project(xstar)
    if stable is None:
        ax.scatter(*points.T, color="gray", marker="o", label="fixed points (stability unknown)")
    else:
        ax.scatter(*points[stable].T, color="black", marker="o", label="stable")
        ax.scatter(*points[~stable].T, color="red", marker="o", label="unstable")
        if fixed_points.eigvec_J_xstar is not None:
            modes = [(i, mode) for i in np.flatnonzero(~stable) for mode in unstable_modes(fixed_points, int(i)).T]
            for n, (i, mode) in enumerate(modes):
                ends = project(np.stack([xstar[i] - mode_scale * mode, xstar[i] + mode_scale * mode]))
                ax.plot(*ends.T, color="red", linewidth=1.5, label="unstable modes" if n == 0 else None)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_zlabel("PC 3")
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    return figure


def plot_eigenvalues(fixed_points: FixedPoints, *, title: str | None = None) -> Figure:
    """Eigenvalues of the Jacobians at the stable points and at the unstable ones, in two panels.

    For a discrete map the panels show the unit circle (stable: every |lambda| < 1), for a continuous
    flow the imaginary axis (stable: every Re lambda < 0); eigenvalues past it are drawn larger.

    Returns
    -------
    matplotlib.figure.Figure
    """
    eigval = fixed_points._require("eigval_J_xstar")
    stable = fixed_points._require("is_stable").astype(bool)
    discrete = fixed_points.dynamics != "continuous"
    figure = _figure_class()(figsize=(10, 5), layout="constrained")
    panels = figure.subplots(1, 2)
    finite = eigval[np.isfinite(eigval)]
    reach = 1.1 * max(1.0, float(np.abs(finite).max())) if finite.size else 1.1
    for ax, selected, color, name in ((panels[0], stable, "black", "stable"), (panels[1], ~stable, "red", "unstable")):
        values = eigval[selected].ravel()
        outside = np.abs(values) > 1 if discrete else values.real > 0
        ax.scatter(values.real[~outside], values.imag[~outside], s=12, color=color, alpha=0.5, linewidths=0)
        ax.scatter(
            values.real[outside],
            values.imag[outside],
            s=40,
            color=color,
            marker="D",
            linewidths=0,
            label="unstable modes" if outside.any() else None,
        )
        if discrete:
            angle = np.linspace(0, 2 * np.pi, 361)
            ax.plot(np.cos(angle), np.sin(angle), color="gray", linestyle="--", linewidth=1, label="unit circle")
        else:
            ax.axvline(0, color="gray", linestyle="--", linewidth=1, label="imaginary axis")
        ax.axhline(0, color="lightgray", linewidth=0.5, zorder=0)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        ax.set_aspect("equal")
        ax.set_title(f"{name} points ({int(selected.sum())})")
        ax.set_xlabel(r"Re $\lambda$")
        ax.legend(loc="upper left", fontsize="small")
    panels[0].set_ylabel(r"Im $\lambda$")
    if title:
        figure.suptitle(title)
    return figure


def plot_trial(inputs: np.ndarray, targets: np.ndarray, outputs: np.ndarray, *, title: str | None = None) -> Figure:
    """One trial of a task: per channel, the input pulses, the target and the network's output.

    Parameters
    ----------
    inputs, targets, outputs : ndarray, (n_time, n_channels)

    Returns
    -------
    matplotlib.figure.Figure
    """
    inputs, targets, outputs = (np.asarray(a, dtype=float) for a in (inputs, targets, outputs))
    if not inputs.shape == targets.shape == outputs.shape or inputs.ndim != 2:
        raise ValueError(
            f"inputs, targets and outputs must share (n_time, n_channels), got "
            f"{inputs.shape}, {targets.shape}, {outputs.shape}"
        )
    n_time, n_channels = inputs.shape
    figure = _figure_class()(figsize=(8, 1.2 + 1.3 * n_channels), layout="constrained")
    axes = figure.subplots(n_channels, 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    steps = np.arange(n_time)
    for channel, ax in enumerate(axes):
        pulses = np.flatnonzero(inputs[:, channel])
        ax.vlines(pulses, 0, inputs[pulses, channel], color="tab:gray", linewidth=3, label="input")
        ax.step(steps, targets[:, channel], where="post", color="black", linestyle="--", linewidth=1, label="target")
        ax.plot(steps, outputs[:, channel], color="tab:blue", linewidth=1.5, label="output")
        ax.axhline(0, color="lightgray", linewidth=0.5, zorder=0)
        ax.set_ylabel(f"bit {channel + 1}")
        ax.set_ylim(-1.4, 1.4)
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize="small")
    axes[-1].set_xlabel("time step")
    if title:
        figure.suptitle(title)
    return figure


def _figure_class() -> type[Figure]:
    """matplotlib's Figure, or an ImportError saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'fpf-client[plot]'") from exc
    return Figure
