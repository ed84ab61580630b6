"""What is done with roots once found: uniqueness, outliers, Jacobians, eigen-decomposition, stability.

Uniqueness and outliers follow FixedPointFinder; the eigen-analysis adds what it lacks: the
saddle index, the Newton step at each point (an error estimate), a certificate that the point
is an isolated root, and a flag for points on a continuum (an eigenvalue at 1, or 0 in
continuous time), where "many fixed points" are really one line or ring attractor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .eigs import leading_eigs
from .models.base import Dynamics, StepModel

#: Up to this many pair-coordinate differences, uniqueness compares all pairs at once: cheaper
#: than a windowed search per representative for the few dozen points after a search (42 points
#: of 19 coordinates: 0.16 against 0.28 ms; the two cost the same at about 100 points).
DENSE_PAIRS = 1 << 16
#: Coordinates compared at once when a window index answers many queries together (about 8 MB
#: of float64 differences): the memory of one slice of :meth:`_WindowIndex.pairs`.
PAIR_ELEMENTS = 1 << 20
#: Rows that choose the window index's axis (:func:`_most_spread_axis`).
SPREAD_SAMPLE = 128
#: q values below this many machine epsilons of rounding per coordinate are one value.
Q_FLOOR_ULPS = 4


def unique_indices(points: torch.Tensor, q: torch.Tensor, tol: float) -> torch.Tensor:
    """Indices of representatives: greedily keep the lowest-q point, drop all within ``tol`` of it.

    q values at the rounding floor of the points' dtype (:func:`rounding_floor_q`) count as
    equal and the earliest sample wins among them: which of two exact copies of a root has the
    lower rounding noise is an accident of the arithmetic (batch size, kernels, threads), and the
    representative, with its cond_id, must not change with it.

    Parameters
    ----------
    points : Tensor, (n, k)
        Points to de-duplicate (fixed points joined with their inputs), compared in max-norm.
    q : Tensor, (n,)
        Lower is better.
    tol : float
        Points closer than this are one point.

    Returns
    -------
    Tensor of int64, sorted ascending.
    """
    device = points.device
    coordinates, q_np = points.detach().cpu().numpy(), q.detach().cpu().numpy()
    eps = torch.finfo(points.dtype).eps if points.is_floating_point() else 0.0
    order = np.argsort(np.where(q_np <= rounding_floor_q(coordinates, eps), 0.0, q_np), kind="stable")
    candidates = coordinates[order]
    if len(order) ** 2 * candidates.shape[1] <= DENSE_PAIRS:
        within = (np.abs(candidates[:, None, :] - candidates[None, :, :]) <= tol).all(-1)
        kept = _first_of_each_neighbourhood(within)
        if kept is None:
            kept = _greedy(len(order), within.__getitem__)
    else:
        index = _WindowIndex(candidates, tol)
        kept = _greedy(len(order), lambda position: index.near(candidates[position]))
    return torch.as_tensor(np.sort(order[kept]), device=device)


def _greedy(n: int, neighbours: Callable[[int], np.ndarray]) -> np.ndarray:
    """Positions 0..n-1 kept in turn, each dropping its ``neighbours(position)`` from the rest."""
    alive = np.ones(n, dtype=bool)
    kept: list[int] = []
    position = 0
    while position < n:
        position += int(alive[position:].argmax())
        if not alive[position]:
            break
        kept.append(position)
        alive[neighbours(position)] = False
        alive[position] = False
    return np.array(kept, dtype=np.int64)


def _first_of_each_neighbourhood(within: np.ndarray) -> np.ndarray | None:
    """The greedy rule's positions from the all-pairs matrix ``within`` without a loop, where it
    decides every point: a point with no earlier neighbour is kept, one with a kept earlier
    neighbour is dropped. None when a point's earlier neighbours are all dropped ones (a chain
    longer than tol), which only the loop resolves."""
    earlier = np.tril(within, -1)
    first = ~earlier.any(1)
    if not (first | (earlier & first).any(1)).all():
        return None
    return np.flatnonzero(first)


def rounding_floor_q(points: np.ndarray, eps: float) -> np.ndarray:
    """Per point (row), the q = ½‖F(x) − x‖² that rounding alone can leave at machine epsilon ``eps``:
    ``Q_FLOOR_ULPS`` epsilons, relative to the point's largest coordinate (at least 1), in every
    coordinate."""
    magnitude = np.maximum(1.0, np.abs(points).max(-1, initial=0.0).astype(np.float64))
    return 0.5 * points.shape[-1] * (Q_FLOOR_ULPS * eps * magnitude) ** 2


def distance_inliers(xstar: np.ndarray, initial_states: np.ndarray, scale: float) -> np.ndarray:
    """Mask of points within ``scale`` mean initial distances of the initial states' centroid.

    The reference's rule: distances to the centroid of the initial states, normalised by the
    mean distance of the initial states to it.
    """
    centroid = initial_states.mean(axis=0)
    mean_dist = np.linalg.norm(initial_states - centroid, axis=1).mean()
    if mean_dist == 0:
        return np.ones(len(xstar), dtype=bool)
    return np.linalg.norm(xstar - centroid, axis=1) / mean_dist < scale


def q_outliers(q: np.ndarray, scale: float) -> np.ndarray:
    """Mask of points whose q exceeds ``scale`` times the median q (the reference's rule)."""
    if len(q) == 0:
        return np.zeros(0, dtype=bool)
    return q > scale * np.median(q)


def discovery_curve(
    sample_index: np.ndarray,
    samples: np.ndarray,
    points: np.ndarray,
    certified: np.ndarray,
    n_samples: int,
    tol: float,
) -> dict[str, list[int]]:
    """How many distinct certified points the first N samples reach, at N = 1, 2, 4, ..., n.

    A curve still rising at N = n says that more initial states would find more roots.

    Parameters
    ----------
    sample_index : ndarray of int, (s,)
        Order of each converged sample among all ``n_samples``.
    samples : ndarray, (s, k)
        Where each converged sample ended (joined with its input).
    points : ndarray, (p, k)
        The reported points (joined with their inputs); ``certified: (p,)`` which count.
    tol : float
        A sample reached a point when within ``tol`` of it (max-norm).

    Returns
    -------
    dict with the JSON-ready lists ``n_initial_states`` and ``n_certified_roots``.
    """
    first = np.full(len(points), n_samples)
    point, reached = _WindowIndex(samples, tol).pairs(points)  # grouped by point
    counts = np.bincount(point, minlength=len(points))
    found = counts > 0
    if found.any():
        first[found] = np.minimum.reduceat(sample_index[reached], (np.cumsum(counts) - counts)[found])
    first = first[np.asarray(certified, dtype=bool)]
    sizes = sorted({*(2**i for i in range(int(np.log2(max(n_samples, 1))) + 1)), n_samples})
    reached_within = np.searchsorted(np.sort(first), sizes, side="left")  # points first reached before each size
    return {"n_initial_states": sizes, "n_certified_roots": reached_within.tolist()}


class _WindowIndex:
    """Rows of ``points: (n, k)`` within ``tol`` (max-norm) of a query point, found fast.

    Rows within tol in max-norm are within tol in every coordinate: a query compares the point
    with the rows in that window of one sorted coordinate only (widened a little, so rounding
    cannot leave one out; the max-norm test decides). The coordinate is the one whose values
    fall into the most distinct bins of width tol, so that windows hold few rows: on trained
    networks many units saturate at the same value for every point.
    """

    def __init__(self, points: np.ndarray, tol: float) -> None:
        self.points, self.tol = points, tol
        self.axis = _most_spread_axis(points, tol)
        column = points[:, self.axis]
        self.order = np.argsort(column, kind="stable")
        self.sorted = column[self.order]

    def near(self, point: np.ndarray) -> np.ndarray:
        """Indices of the rows within tol of ``point: (k,)``."""
        lo = np.searchsorted(self.sorted, point[self.axis] - 2 * self.tol, side="left")
        hi = np.searchsorted(self.sorted, point[self.axis] + 2 * self.tol, side="right")
        rows = self.order[lo:hi]
        return rows[(np.abs(self.points[rows] - point) <= self.tol).all(-1)]

    def pairs(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (query, row) pair within tol, in order of query, for all rows of ``queries: (m, k)``
        at once: one vectorised pass over the queries' windows instead of a search per query, in
        slices of about PAIR_ELEMENTS compared coordinates."""
        lo = np.searchsorted(self.sorted, queries[:, self.axis] - 2 * self.tol, side="left")
        hi = np.searchsorted(self.sorted, queries[:, self.axis] + 2 * self.tol, side="right")
        ends = np.cumsum(hi - lo)
        rows_per_slice = max(1, PAIR_ELEMENTS // max(1, self.points.shape[1]))
        cuts = np.searchsorted(ends, np.arange(rows_per_slice, ends[-1] if len(ends) else 0, rows_per_slice))
        found_query, found_row = [], []
        for part in np.split(np.arange(len(queries)), np.unique(cuts)):
            counts = hi[part] - lo[part]
            query = np.repeat(part, counts)
            within_window = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            rows = self.order[np.repeat(lo[part], counts) + within_window]
            close = (np.abs(self.points[rows] - queries[query]) <= self.tol).all(-1)  # a max over k is slower
            found_query.append(query[close])
            found_row.append(rows[close])
        return np.concatenate(found_query), np.concatenate(found_row)


def _most_spread_axis(points: np.ndarray, tol: float) -> int:
    """The coordinate of ``points: (n, k)`` that takes the most distinct values at resolution tol,
    judged on at most SPREAD_SAMPLE evenly strided rows: the axis only sets how many rows a window
    holds, never which rows are near, and sorting every column of every row cost more than the
    searches it speeds up."""
    if len(points) < 2:
        return 0
    rows = points[:: -(-len(points) // SPREAD_SAMPLE)]
    bins = np.sort(np.floor(rows / tol), axis=0)
    return int((np.diff(bins, axis=0) != 0).sum(0).argmax())


@dataclass
class PointAnalysis:
    """Derivatives and their analysis at a set of points (numpy, float64 where computed here)."""

    F_xstar: np.ndarray
    J_xstar: np.ndarray
    dFdu: np.ndarray | None
    step_norm: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray
    is_stable: np.ndarray
    n_unstable: np.ndarray
    is_nonisolated: np.ndarray
    certified: np.ndarray


def analyse_points(
    model: StepModel,
    xstar: torch.Tensor,
    inputs: torch.Tensor,
    dynamics: Dynamics,
    *,
    tol_nonisolated: float,
    tol_step: float,
    with_input_jacobians: bool = True,
    n_eigs: int | None = None,
) -> PointAnalysis:
    """Jacobians, eigen-decomposition and certificates at ``xstar: (k, d)`` with ``inputs: (k, m)``.

    ``certified`` holds where dG/dx is nonsingular (no eigenvalue of dG/dx within
    ``tol_nonisolated`` of 0) and the Newton step at the point is below ``tol_step``: Newton
    has converged to an isolated root, located to within about the step. With ``n_eigs``
    only the least stable modes are computed (:func:`workers.engine.eigs.leading_eigs`):
    stability is still exact, ``n_unstable`` is a lower bound when it equals ``n_eigs``, and
    ``is_nonisolated`` looks at those modes only.
    """
    k, d = xstar.shape
    if k == 0:  # no model calls: some derivative paths cannot map over an empty batch
        n_modes = n_eigs if n_eigs is not None and n_eigs < d - 1 else d
        flags = np.zeros(0, dtype=bool)
        return PointAnalysis(
            F_xstar=np.zeros((0, d)),
            J_xstar=np.zeros((0, d, d)),
            dFdu=np.zeros((0, d, model.n_inputs)) if with_input_jacobians else None,
            step_norm=np.zeros(0),
            eigval=np.zeros((0, n_modes), dtype=complex),
            eigvec=np.zeros((0, d, n_modes), dtype=complex),
            is_stable=flags,
            n_unstable=np.zeros(0, dtype=int),
            is_nonisolated=flags,
            certified=flags,
        )
    with torch.no_grad():
        fx = model.step(xstar, inputs)
    if with_input_jacobians:
        jac, dfdu = model.jacobians(xstar, inputs)
    else:
        jac, dfdu = model.jacobian_states(xstar, inputs), None
    J = jac.detach().cpu().double().numpy()
    F = fx.detach().cpu().double().numpy()
    x = xstar.detach().cpu().double().numpy()
    eye = np.eye(x.shape[1])
    G, JG = (F - x, J - eye) if dynamics == "discrete" else (F, J)
    if n_eigs is not None and n_eigs < x.shape[1] - 1:
        eigval, eigvec = leading_eigs(model, xstar, inputs, dynamics, n_eigs)
    else:
        eigval, eigvec = decompose(J, dynamics)
    shift = eigval - 1 if dynamics == "discrete" else eigval
    is_nonisolated = (np.abs(shift) < tol_nonisolated).any(axis=1)
    step_norm = _newton_step_norm(JG, G)
    if dynamics == "discrete":
        unstable = np.abs(eigval) > 1
    else:
        unstable = eigval.real > 0
    return PointAnalysis(
        F_xstar=F,
        J_xstar=J,
        dFdu=None if dfdu is None else dfdu.detach().cpu().double().numpy(),
        step_norm=step_norm,
        eigval=eigval,
        eigvec=eigvec,
        is_stable=~unstable.any(axis=1),
        n_unstable=unstable.sum(axis=1),
        is_nonisolated=is_nonisolated,
        certified=~is_nonisolated & (step_norm < tol_step),
    )


def decompose(J: np.ndarray, dynamics: Dynamics) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors (columns) of each ``J: (k, d, d)``, in decreasing order of
    |lambda| (discrete) or Re lambda (continuous): the least stable mode first."""
    if len(J) == 0:
        d = J.shape[-1]
        return np.zeros((0, d), dtype=complex), np.zeros((0, d, d), dtype=complex)
    eigval, eigvec = (
        t.numpy() for t in torch.linalg.eig(torch.from_numpy(J))
    )  # torch's batched LAPACK call beats numpy's loop
    key = np.abs(eigval) if dynamics == "discrete" else eigval.real
    order = np.argsort(-key, axis=1, kind="stable")
    eigval = np.take_along_axis(eigval, order, axis=1).astype(complex)
    eigvec = np.take_along_axis(eigvec, order[:, None, :], axis=2).astype(complex)
    return eigval, eigvec


def _newton_step_norm(JG: np.ndarray, G: np.ndarray) -> np.ndarray:
    """|dG/dx^-1 G| per point: by LU solves, far cheaper than SVDs, which are the fallback for
    matrices LU finds singular (inf there)."""
    if len(G) == 0:
        return np.zeros(0)
    try:
        with np.errstate(all="ignore"):
            norms = np.linalg.norm(np.linalg.solve(JG, G[..., None])[..., 0], axis=1)
    except np.linalg.LinAlgError:
        return _newton_step_norm_svd(JG, G)
    failed = ~np.isfinite(norms)
    if failed.any():
        norms[failed] = _newton_step_norm_svd(JG[failed], G[failed])
    return norms


def _newton_step_norm_svd(JG: np.ndarray, G: np.ndarray) -> np.ndarray:
    """|dG/dx^-1 G| per point by SVD (inf where dG/dx is numerically singular)."""
    u, s, _ = np.linalg.svd(JG)
    singular = s[:, -1] <= s[:, :1].squeeze(1) * JG.shape[1] * np.finfo(float).eps
    coeffs = np.einsum("kji,kj->ki", u, G) / np.where(s > 0, s, np.inf)
    norms = np.linalg.norm(coeffs, axis=1)  # vh is orthogonal: |vh^T c| = |c|
    return np.where(singular, np.inf, norms)
