"""A stored result prepared for the web page's plots: counts, the points in their top three principal
components, unstable modes as segments, and a bounded sample of the eigenvalue spectra.

The projection runs here, with numpy on the result ``.npz``, so that the browser draws a few
thousand numbers instead of decomposing (n, n_states) arrays itself. Only the members the page
needs are read: never the Jacobians.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fpf_client.fixed_points import META_KEY

#: Most eigenvalues sent for the spectra, over all points; each point gets its leading share.
MAX_SPECTRUM_VALUES = 20_000
#: Unstable modes drawn per point: the leading ones (eigenvalues come by decreasing |lambda|).
MAX_MODES_PER_POINT = 3
#: Leading eigenvalues listed per point (hover text and table).
LEADING_EIGVALS = 3
#: Larger sets (points and states both) are projected by subspace iteration instead of an exact eigh.
EXACT_UP_TO = 256
OVERSAMPLE = 10
POWER_ITERATIONS = 8
#: A mode's segment reaches this fraction of the points' RMS distance from their mean on each side.
MODE_SCALE = 0.1

_SLOW = "slow_points."


def result_view(path: Path) -> dict[str, Any]:
    """The page's view of the result file at ``path`` (a ``FixedPoints.save`` archive) as JSON-ready data."""
    with np.load(path, allow_pickle=False) as archive:
        members = set(archive.files)

        def read(name: str) -> np.ndarray | None:
            return archive[name] if name in members else None

        meta = json.loads(str(archive[META_KEY])) if META_KEY in members else {}
        xstar = np.atleast_2d(read("xstar")).astype(np.float64)
        qstar, eigval = read("qstar"), read("eigval_J_xstar")
        is_stable, n_unstable = read("is_stable"), read("n_unstable")
        certified, nonisolated = read("certified"), read("is_nonisolated")
        slow_xstar, slow_qstar = read(_SLOW + "xstar"), read(_SLOW + "qstar")
        dynamics = str(meta.get("dynamics", "discrete"))
        k, d = xstar.shape
        mean, axes = principal_axes(xstar)
        modes = None
        if eigval is not None and "eigvec_J_xstar" in members and is_stable is not None and k:
            modes = _mode_segments(xstar, mean, axes, eigval, archive["eigvec_J_xstar"], is_stable, dynamics)

    info = meta.get("info", {})
    points = _project(xstar, mean, axes)
    view: dict[str, Any] = {
        "n_points": k,
        "n_states": d,
        "dynamics": dynamics,
        "tol_q": meta.get("tol_q"),
        "counts": _counts(k, is_stable, n_unstable, certified, nonisolated, slow_xstar),
        "explained_variance": _explained(xstar, mean, axes),
        "points": {
            "x": _floats(points[:, 0]),
            "y": _floats(points[:, 1]),
            "z": _floats(points[:, 2]),
            "q": _floats(qstar),
            "is_stable": _bools(is_stable),
            "n_unstable": None if n_unstable is None else n_unstable.astype(int).tolist(),
            "certified": _bools(certified),
            "is_nonisolated": _bools(nonisolated),
            "leading_eigvals": None if eigval is None else _complex_rows(eigval[:, :LEADING_EIGVALS]),
        },
        "modes": modes,
        "spectra": None if eigval is None else _spectra(eigval),
        "slow_points": None if slow_xstar is None else _slow(np.atleast_2d(slow_xstar), slow_qstar, mean, axes),
        "discovery_curve": info.get("discovery_curve"),
        "info": {
            key: info[key]
            for key in (
                "n_samples",
                "n_converged",
                "n_stalled",
                "n_capped",
                "wall_time_s",
                "method",
                "partial",
                "partial_reason",
                "warnings",
            )
            if key in info
        },
    }
    return view


def principal_axes(states: np.ndarray, n_components: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and top principal directions (d, c) of ``states: (k, d)``, c = min(n_components, d).

    Small sets decompose the smaller Gram matrix exactly. From :data:`EXACT_UP_TO` points and states
    on, subspace iteration finds the top directions with a few products with the data, where a full
    ``eigh`` or SVD would cost O(d^3) for three vectors.
    """
    k, d = states.shape
    c = min(n_components, d)
    if k == 0:
        return np.zeros(d), np.zeros((d, c))
    mean = states.mean(axis=0)
    centered = states - mean
    if min(k, d) > EXACT_UP_TO:
        return mean, _subspace_iteration(centered, c)
    if d <= k:
        _, vectors = np.linalg.eigh(centered.T @ centered)
        return mean, vectors[:, ::-1][:, :c]
    _, left = np.linalg.eigh(centered @ centered.T)
    axes = centered.T @ left[:, ::-1][:, :c]
    norms = np.linalg.norm(axes, axis=0)
    return mean, np.where(norms > 0, axes / np.where(norms > 0, norms, 1.0), 0.0)


def _subspace_iteration(centered: np.ndarray, c: int) -> np.ndarray:
    """The top ``c`` right singular vectors of ``centered`` by randomized subspace iteration (Halko,
    Martinsson and Tropp 2011), with a fixed seed so that a result always looks the same."""
    basis = np.random.default_rng(0).standard_normal((centered.shape[1], c + OVERSAMPLE))
    for _ in range(POWER_ITERATIONS):
        basis, _ = np.linalg.qr(centered.T @ (centered @ basis))
    _, _, vt = np.linalg.svd(centered @ basis, full_matrices=False)
    return basis @ vt[:c].T


def _project(states: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """(k, 3) coordinates; a result with fewer than three dimensions lies flat in the others."""
    coords = (states - mean) @ axes
    return np.pad(coords, [(0, 0), (0, 3 - coords.shape[1])])


def _explained(states: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> list[float | None]:
    """Fraction of the points' variance along each of the three axes."""
    total = float(np.sum((states - mean) ** 2)) if states.size else 0.0
    along = np.sum(_project(states, mean, axes) ** 2, axis=0)
    return [float(v / total) if total > 0 else None for v in along]


def _counts(
    k: int,
    is_stable: np.ndarray | None,
    n_unstable: np.ndarray | None,
    certified: np.ndarray | None,
    nonisolated: np.ndarray | None,
    slow_xstar: np.ndarray | None,
) -> dict[str, Any]:
    saddles: dict[str, int] = {}
    if n_unstable is not None:
        indices, counts = np.unique(n_unstable.astype(int), return_counts=True)
        saddles = {str(i): int(c) for i, c in zip(indices, counts) if i > 0}
    return {
        "fixed_points": k,
        "stable": None if is_stable is None else int(is_stable.astype(bool).sum()),
        "saddles_by_index": saddles,
        "non_isolated": None if nonisolated is None else int(nonisolated.astype(bool).sum()),
        "slow_points": 0 if slow_xstar is None else int(np.atleast_2d(slow_xstar).shape[0]),
        "certified": None if certified is None else int(certified.astype(bool).sum()),
    }


def _mode_segments(
    xstar: np.ndarray,
    mean: np.ndarray,
    axes: np.ndarray,
    eigval: np.ndarray,
    eigvec: np.ndarray,
    is_stable: np.ndarray,
    dynamics: str,
) -> dict[str, list]:
    """Each unstable point's leading unstable modes as segments through it, in PC coordinates."""
    spread = float(np.sqrt(np.mean(np.sum((xstar - mean) ** 2, axis=1)))) if xstar.shape[0] > 1 else 0.0
    half = MODE_SCALE * (spread if spread > 0 else 1.0)
    outside = eigval.real > 0 if dynamics == "continuous" else np.abs(eigval) > 1
    outside &= ~is_stable.astype(bool)[:, None]
    points, columns = np.nonzero(outside & (np.cumsum(outside, axis=1) <= MAX_MODES_PER_POINT))
    modes = np.real(eigvec[points, :, columns]).astype(np.float64)  # (segments, d)
    norms = np.linalg.norm(modes, axis=1)
    keep = norms > 0
    points, modes = points[keep], modes[keep] / norms[keep, None]
    centres = _project(xstar[points], mean, axes)
    reach = half * np.pad(modes @ axes, [(0, 0), (0, 3 - axes.shape[1])])
    out: dict[str, list] = {"point": points.tolist()}
    for axis, name in enumerate("xyz"):
        out[name] = [
            [a, b]
            for a, b in zip(_floats(centres[:, axis] - reach[:, axis]), _floats(centres[:, axis] + reach[:, axis]))
        ]
    return out


def _spectra(eigval: np.ndarray) -> dict[str, Any]:
    """Every point's leading eigenvalues, at most :data:`MAX_SPECTRUM_VALUES` in all."""
    k, m = eigval.shape if eigval.ndim == 2 else (eigval.shape[0], 1)
    eigval = eigval.reshape(k, m)
    shown = min(m, max(1, MAX_SPECTRUM_VALUES // max(k, 1)))
    leading = eigval[:, :shown]
    return {
        "per_point": shown,
        "of": m,
        "point": np.repeat(np.arange(k), shown).tolist(),
        "re": _floats(leading.real.ravel()),
        "im": _floats(leading.imag.ravel()),
    }


def _slow(xstar: np.ndarray, qstar: np.ndarray | None, mean: np.ndarray, axes: np.ndarray) -> dict[str, Any]:
    coords = _project(xstar.astype(np.float64), mean, axes)
    return {"x": _floats(coords[:, 0]), "y": _floats(coords[:, 1]), "z": _floats(coords[:, 2]), "q": _floats(qstar)}


def _floats(values: np.ndarray | None) -> list[float | None] | None:
    """Plain floats for JSON, None where not finite (strict JSON has no NaN)."""
    if values is None:
        return None
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).ravel().tolist()]


def _bools(values: np.ndarray | None) -> list[bool] | None:
    return None if values is None else values.astype(bool).ravel().tolist()


def _complex_rows(values: np.ndarray) -> list[list[list[float | None]]]:
    """Rows of complex numbers as ``[[re, im], ...]``."""
    return [[[re, im] for re, im in zip(_floats(row.real), _floats(row.imag))] for row in np.atleast_2d(values)]
