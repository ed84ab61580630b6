"""Fixed points drawn in the top-3 principal-component space of the network's trajectories.

The picture of FixedPointFinder's ``plot_fps``: trajectories in blue, stable points black,
unstable ones red with their unstable modes as short lines. matplotlib is an optional extra
(``pip install fpf-client[plot]``); only its object API is used, so any backend, Agg included, works.
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


def unstable_modes(fixed_points: "FixedPoints", index: int) -> np.ndarray:
    """Unit eigenvectors (d, r) of point ``index`` whose eigenvalues are unstable.

    Unstable means |lambda| > 1 for a discrete map, Re lambda > 0 for a continuous flow; a complex
    pair contributes the real part of its eigenvector.
    """
    eigval = fixed_points.eigval_J_xstar[index]
    eigvec = fixed_points.eigvec_J_xstar[index]
    outside = eigval.real > 0 if fixed_points.dynamics == "continuous" else np.abs(eigval) > 1
    modes = np.real(eigvec[:, outside])
    norms = np.linalg.norm(modes, axis=0)
    return modes[:, norms > 0] / norms[norms > 0]


def plot_fixed_points(
    fixed_points: "FixedPoints",
    trajectories: np.ndarray | None = None,
    *,
    mode_scale: float = 0.1,
    max_trajectories: int | None = 100,
    ax: Any = None,
) -> "Figure":
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
    ax : mpl_toolkits.mplot3d.Axes3D, optional
        Draw here instead of on a new figure.

    Returns
    -------
    matplotlib.figure.Figure
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'fpf-client[plot]'") from exc

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
        figure = Figure(figsize=(6, 6))
        ax = figure.add_subplot(projection="3d")
    else:
        figure = ax.figure
    if trajectories is not None:
        for trajectory in trajectories[:max_trajectories]:
            ax.plot(*project(trajectory).T, color="tab:blue", linewidth=0.5, alpha=0.5)

    stable = fixed_points.is_stable.astype(bool) if fixed_points.is_stable is not None else None
    points = project(xstar)
    if stable is None:
        ax.scatter(*points.T, color="gray", marker="o", label="fixed points (stability unknown)")
    else:
        ax.scatter(*points[stable].T, color="black", marker="o", label="stable")
        ax.scatter(*points[~stable].T, color="red", marker="o", label="unstable")
        if fixed_points.eigvec_J_xstar is not None:
            for i in np.flatnonzero(~stable):
                for mode in unstable_modes(fixed_points, i).T:
                    ends = project(np.stack([xstar[i] - mode_scale * mode, xstar[i] + mode_scale * mode]))
                    ax.plot(*ends.T, color="red", linewidth=1.5)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_zlabel("PC 3")
    return figure
