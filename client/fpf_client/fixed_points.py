"""FixedPoints: the result container, numpy only, shared by the engine and the client.

Field names are FixedPointFinder's (``xstar``, ``qstar``, ``J_xstar``, ...), so code
written against the reference tool reads our results unchanged. The same container
is returned in-process by the engine, decoded from ``.npz`` or JSON by the client,
and saved and loaded with :meth:`FixedPoints.save` / :meth:`FixedPoints.load`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from os import PathLike
from typing import IO, TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Per-point array fields, in display order, with the trailing shape of one point.
#: ``d`` is n_states, ``m`` is n_inputs.
POINT_FIELDS: dict[str, str] = {
    "xstar": "(d,) the fixed point",
    "x_init": "(d,) the initial state it was found from",
    "inputs": "(m,) the input it is a fixed point for",
    "F_xstar": "(d,) F(xstar, inputs): the map (or vector field) at xstar",
    "qstar": "() q = 0.5 * |G(xstar)|^2, G = F - x (discrete) or f (continuous)",
    "dq": "() the last change of q",
    "n_iters": "() solver iterations spent",
    "step_norm": "() norm of the Newton step at xstar: an error estimate",
    "certified": "() Newton converged quadratically to an isolated root",
    "J_xstar": "(d, d) dF/dx at xstar",
    "dFdu": "(d, m) dF/du at xstar",
    "eigval_J_xstar": "(d,) eigenvalues, by decreasing |lambda| (real part for continuous)",
    "eigvec_J_xstar": "(d, d) eigenvectors as columns, in eigval order",
    "is_stable": "() all |lambda| < 1 (discrete) or Re lambda < 0 (continuous)",
    "n_unstable": "() number of unstable modes: the saddle index",
    "is_nonisolated": "() an eigenvalue within tol_nonisolated of 1 (or 0): part of a continuum?",
    "cond_id": "() index of the input condition",
}

#: The ``.npz`` member holding a result's scalar fields and run information, as JSON.
META_KEY = "__meta__"
_SLOW_PREFIX = "slow_points."
_ALL_PREFIX = "all_samples."
#: Prefixes of the ``.npz`` members of the nested results (``slow_points``, ``all_samples``).
NESTED_PREFIXES = (_SLOW_PREFIX, _ALL_PREFIX)


@dataclass(eq=False)
class FixedPoints:
    """A set of fixed points of a recurrent map, with their analysis.

    Every array field holds one row per point; fields that were not computed
    (e.g. ``J_xstar`` with ``do_compute_jacobians=False``) are ``None``.

    Attributes
    ----------
    xstar : ndarray, (k, n_states)
    x_init, inputs, F_xstar, qstar, dq, n_iters, step_norm, certified,
    J_xstar, dFdu, eigval_J_xstar, eigvec_J_xstar, is_stable, n_unstable,
    is_nonisolated, cond_id : ndarray or None
        See :data:`POINT_FIELDS`.
    dynamics : {"discrete", "continuous"}
        Whether stability is judged against the unit circle or the imaginary axis.
    tol_q, tol_unique : float
        The tolerances the points were found and de-duplicated with.
    info : dict
        JSON-serialisable run information: counts of converged, stalled and capped
        samples, timings, the discovery curve.
    slow_points : FixedPoints or None
        Unconverged minima of q below ``q_slow``, never counted as fixed points.
    all_samples : FixedPoints or None
        With ``return_all_samples``: every initial state's outcome, one row each, in the order
        given (FixedPointFinder's ``all_fps``), converged or not.
    """

    xstar: np.ndarray
    x_init: np.ndarray | None = None
    inputs: np.ndarray | None = None
    F_xstar: np.ndarray | None = None
    qstar: np.ndarray | None = None
    dq: np.ndarray | None = None
    n_iters: np.ndarray | None = None
    step_norm: np.ndarray | None = None
    certified: np.ndarray | None = None
    J_xstar: np.ndarray | None = None
    dFdu: np.ndarray | None = None
    eigval_J_xstar: np.ndarray | None = None
    eigvec_J_xstar: np.ndarray | None = None
    is_stable: np.ndarray | None = None
    n_unstable: np.ndarray | None = None
    is_nonisolated: np.ndarray | None = None
    cond_id: np.ndarray | None = None
    dynamics: str = "discrete"
    tol_q: float = 1e-12
    tol_unique: float = 1e-3
    info: dict[str, Any] = field(default_factory=dict)
    slow_points: FixedPoints | None = None
    all_samples: FixedPoints | None = None

    def __post_init__(self) -> None:
        self.xstar = np.atleast_2d(np.asarray(self.xstar))
        k = self.xstar.shape[0]
        for name in POINT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            if value.shape[:1] != (k,):
                raise ValueError(f"{name} has {value.shape[:1]} rows, xstar has {k}")
            setattr(self, name, value)

    # --- sizes ---------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of fixed points."""
        return int(self.xstar.shape[0])

    @property
    def n_states(self) -> int:
        return int(self.xstar.shape[1])

    @property
    def n_inputs(self) -> int | None:
        return None if self.inputs is None else int(self.inputs.shape[1])

    def __len__(self) -> int:
        return self.n

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-point fields that are present, by name."""
        return {name: getattr(self, name) for name in POINT_FIELDS if getattr(self, name) is not None}

    def __eq__(self, other: object) -> bool:
        """Exact equality: same fields, dtypes, shapes and values (NaN equals NaN), same metadata."""
        if not isinstance(other, FixedPoints):
            return NotImplemented
        mine, theirs = self.arrays(), other.arrays()
        return (
            mine.keys() == theirs.keys()
            and all(_arrays_identical(mine[name], theirs[name]) for name in mine)
            and self._meta() == other._meta()
            and self.slow_points == other.slow_points
            and self.all_samples == other.all_samples
        )

    __hash__ = None  # type: ignore[assignment]  # mutable container

    # --- selection -----------------------------------------------------------------
    def __getitem__(self, index: Any) -> FixedPoints:
        """Select points by integer, slice, index array or boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        selected = {name: value[index] for name, value in self.arrays().items()}
        return replace(self, **selected)

    def __iter__(self) -> Iterator[FixedPoints]:
        return (self[i] for i in range(self.n))

    def __contains__(self, item: Any) -> bool:
        """Whether a point matches: a one-point :class:`FixedPoints` as in :meth:`find` (2-norm of
        (xstar, inputs) within ``tol_unique``), or a state (n_states,) within ``tol_unique`` in max-norm."""
        if isinstance(item, FixedPoints):
            return self.find(item).size > 0
        state = np.asarray(item, dtype=float).reshape(-1)
        if state.shape[0] != self.n_states or self.n == 0:
            return False
        return bool(np.any(np.max(np.abs(self.xstar - state), axis=1) <= self.tol_unique))

    def __setitem__(self, index: Any, other: FixedPoints) -> None:
        """Overwrite the points ``index`` with the rows of ``other``, field by field (fields absent here
        stay absent)."""
        if not isinstance(other, FixedPoints):
            raise TypeError(f"can only assign a FixedPoints, not {type(other).__name__}")
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        for name, value in self.arrays().items():
            theirs = getattr(other, name)
            if theirs is None:
                raise ValueError(f"the assigned points have no {name}")
            value[index] = theirs

    def find(self, fp: FixedPoints) -> np.ndarray:
        """Indices of the points within ``tol_unique`` of the one point in ``fp``, in the 2-norm of
        (xstar, inputs) (FixedPointFinder's rule); empty when the dimensions differ."""
        if not isinstance(fp, FixedPoints) or fp.n_states != self.n_states or fp.n_inputs != self.n_inputs:
            return np.array([], dtype=int)
        distance = np.linalg.norm(self._keys() - fp._keys()[:1], axis=1)
        return np.flatnonzero(distance <= self.tol_unique)

    def get_unique(self) -> FixedPoints:
        """FixedPointFinder's de-duplication: points within ``tol_unique`` in the 2-norm of
        (xstar, inputs) are one, and the one with the lowest ``qstar`` stands for them."""
        q = self.qstar if self.qstar is not None else np.zeros(self.n)
        return self[reference_unique_indices(self._keys(), np.asarray(q, dtype=float), self.tol_unique)]

    def _keys(self) -> np.ndarray:
        """(xstar, inputs) joined: what uniqueness compares."""
        parts = [self.xstar] if self.inputs is None else [self.xstar, self.inputs]
        keys: np.ndarray = np.concatenate([np.asarray(p, dtype=np.float64) for p in parts], axis=1)
        return keys

    def transform(self, U: np.ndarray, offset: Any = 0.0) -> FixedPoints:
        """The points in another linear space: ``xstar @ U + offset`` (also x_init and F_xstar), and
        the eigenvectors mapped by ``U.T`` (directions do not take the offset).

        Parameters
        ----------
        U : ndarray, (n_states, k)
        offset : float or ndarray, (k,)
        """
        U = np.asarray(U)
        moved = {
            name: getattr(self, name) @ U + offset
            for name in ("xstar", "x_init", "F_xstar")
            if getattr(self, name) is not None
        }
        if self.eigvec_J_xstar is not None:
            moved["eigvec_J_xstar"] = np.matmul(U.T, self.eigvec_J_xstar)
        return replace(self, **moved)

    def update(self, other: FixedPoints) -> None:
        """Append the points of ``other`` in place; both must hold the same fields."""
        if set(self.arrays()) != set(other.arrays()):
            raise ValueError(f"cannot update: fields differ ({sorted(set(self.arrays()) ^ set(other.arrays()))})")
        if other.tol_unique != self.tol_unique or other.dynamics != self.dynamics:
            raise ValueError("cannot update: tol_unique or dynamics differ")
        for name, value in self.arrays().items():
            setattr(self, name, np.concatenate([value, getattr(other, name)]))

    def decompose_jacobians(self, do_batch: bool = True, str_prefix: str = "") -> None:
        """Fill eigval_J_xstar and eigvec_J_xstar (by decreasing |lambda|), is_stable and
        n_unstable from J_xstar; a Jacobian with NaNs gives NaN eigen-data. Already decomposed:
        nothing is redone. ``do_batch`` and ``str_prefix`` are accepted for the reference's callers."""
        if self.has_decomposed_jacobians:
            return
        J = self._require("J_xstar")
        valid = np.isfinite(J).all(axis=(1, 2))
        complex_dtype = np.result_type(J.dtype, np.complex64)
        eigval = np.full(J.shape[:2], np.nan, dtype=complex_dtype)
        eigvec = np.full(J.shape, np.nan, dtype=complex_dtype)
        if valid.any():
            values, vectors = np.linalg.eig(J[valid])
            key = values.real if self.dynamics == "continuous" else np.abs(values)
            order = np.argsort(-key, axis=1, kind="stable")
            eigval[valid] = np.take_along_axis(values, order, axis=1)
            eigvec[valid] = np.take_along_axis(vectors, order[:, None, :], axis=2)
        unstable = eigval.real > 0 if self.dynamics == "continuous" else np.abs(eigval) >= 1
        self.eigval_J_xstar, self.eigvec_J_xstar = eigval, eigvec
        self.n_unstable = unstable.sum(axis=1)
        self.is_stable = valid & (self.n_unstable == 0)

    decompose_Jacobians = decompose_jacobians  # the spelling plot_utils calls

    @property
    def has_decomposed_jacobians(self) -> bool:
        return self.eigval_J_xstar is not None

    @property
    def is_single_fixed_point(self) -> bool:
        return self.n == 1

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments that rebuild a (shallow) copy: ``FixedPoints(**fps.kwargs)``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def approximate_updates(self, states: Any, inputs: Any = None) -> np.ndarray:
        """x_{t+1} ~= x* + J (x - x*) + dFdu (u - u*) around every point: the update each point's
        linearisation predicts for each state.

        Parameters
        ----------
        states : ndarray, (n, d)
        inputs : ndarray, (1 | n, m), optional
            Without it the input term is dropped (inputs equal to each point's own).

        Returns
        -------
        ndarray, (k, n, d), k the number of points.
        """
        if self.J_xstar is None:
            raise ValueError("no J_xstar: find the points with do_compute_jacobians=True")
        states = np.atleast_2d(np.asarray(states, dtype=float))
        dx = states[None, :, :] - self.xstar[:, None, :]
        out: np.ndarray = self.xstar[:, None, :] + np.einsum("kij,knj->kni", self.J_xstar, dx)
        if inputs is not None:
            if self.dFdu is None or self.inputs is None:
                raise ValueError("no dFdu: find the points with do_compute_input_jacobians=True")
            du = np.atleast_2d(np.asarray(inputs, dtype=float))[None, :, :] - self.inputs[:, None, :]
            out = out + np.einsum("kij,knj->kni", self.dFdu, du)
        return out

    def assert_valid_shapes(self) -> None:
        """Raise ValueError when a per-point field has another number of rows than xstar (after edits in place)."""
        for name, value in self.arrays().items():
            if value.shape[:1] != (self.n,):
                raise ValueError(f"{name} has {value.shape[:1]} rows, xstar has {self.n}")

    def print_shapes(self) -> None:
        """Print each per-point field's shape (None when it was not computed)."""
        for name in POINT_FIELDS:
            value = getattr(self, name)
            print(f"{name}: {None if value is None else value.shape}")

    @property
    def stable(self) -> FixedPoints:
        """The stable fixed points."""
        return self[self._require("is_stable").astype(bool)]

    @property
    def unstable(self) -> FixedPoints:
        """The unstable fixed points (saddles and repellers)."""
        return self[~self._require("is_stable").astype(bool)]

    def _require(self, name: str) -> np.ndarray:
        value: np.ndarray | None = getattr(self, name)
        if value is None:
            raise ValueError(f"{name} was not computed (run with do_decompose_jacobians=True)")
        return value

    @classmethod
    def concatenate(cls, parts: Iterable[FixedPoints]) -> FixedPoints:
        """Join point sets; fields missing from any part are dropped."""
        parts = list(parts)
        if not parts:
            raise ValueError("nothing to concatenate")
        shared = set.intersection(*(set(p.arrays()) for p in parts))
        joined: dict[str, Any] = {name: np.concatenate([getattr(p, name) for p in parts]) for name in shared}
        empty: dict[str, Any] = {name: None for name in POINT_FIELDS if name not in shared}
        return replace(parts[0], **empty, **joined, info={}, slow_points=None, all_samples=None)

    def unique(self, tol: float | None = None) -> FixedPoints:
        """Merge points closer than ``tol`` (default ``tol_unique``), keeping the lowest q."""
        tol = self.tol_unique if tol is None else tol
        order = np.argsort(self.qstar) if self.qstar is not None else np.arange(self.n)
        kept: list[int] = []
        for i in order:
            if not kept or np.max(np.abs(self.xstar[kept] - self.xstar[i]), axis=1).min() > tol:
                kept.append(int(i))
        return self[np.sort(np.asarray(kept, dtype=int))]

    # --- serialisation -------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {"dynamics": self.dynamics, "tol_q": self.tol_q, "tol_unique": self.tol_unique, "info": self.info}

    def to_npz_arrays(self) -> dict[str, np.ndarray]:
        """Flat ``name -> array`` mapping as stored in ``.npz`` (no pickled objects)."""
        out = dict(self.arrays())
        out[META_KEY] = np.array(json.dumps(self._meta(), default=_json_default))
        for prefix, nested in ((_SLOW_PREFIX, self.slow_points), (_ALL_PREFIX, self.all_samples)):
            if nested is not None:
                out.update({prefix + k: v for k, v in nested.to_npz_arrays().items()})
        return out

    @classmethod
    def from_npz_arrays(cls, arrays: dict[str, np.ndarray]) -> FixedPoints:
        meta = json.loads(str(arrays[META_KEY])) if META_KEY in arrays else {}
        slow = {k[len(_SLOW_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_SLOW_PREFIX)}
        every = {k[len(_ALL_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_ALL_PREFIX)}
        own: dict[str, Any] = {k: v for k, v in arrays.items() if k in POINT_FIELDS}
        return cls(
            **own,
            **meta,
            slow_points=cls.from_npz_arrays(slow) if slow else None,
            all_samples=cls.from_npz_arrays(every) if every else None,
        )

    def save(self, file: str | PathLike[str] | IO[bytes]) -> None:
        """Write to ``.npz`` (compressed, loadable with ``allow_pickle=False``)."""
        arrays: dict[str, Any] = self.to_npz_arrays()
        np.savez_compressed(file, **arrays)

    def to_npz_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.save(buffer)
        return buffer.getvalue()

    @classmethod
    def load(cls, file: str | PathLike[str] | IO[bytes] | bytes | memoryview) -> FixedPoints:
        """Read a file written by :meth:`save` (or the service's npz result), or its bytes."""
        if isinstance(file, (bytes, bytearray, memoryview)):
            file = io.BytesIO(file)
        with np.load(file, allow_pickle=False) as data:
            return cls.from_npz_arrays({k: data[k] for k in data.files})

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready dict (no NaN tokens), read back exactly by :meth:`from_json_dict`.

        Arrays are nested lists, complex ones ``{"real", "imag"}``; non-finite values are the
        strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; ``array_specs`` keeps each array's
        dtype and shape so that float32 stays float32 and empty sets keep their shape.
        """
        out: dict[str, Any] = {"n": self.n, "n_states": self.n_states, **self._meta()}
        out["info"] = json.loads(json.dumps(self.info, default=_json_default))
        out["fields"] = {name: _array_to_json(value) for name, value in self.arrays().items()}
        out["array_specs"] = {
            name: {"dtype": value.dtype.name, "shape": list(value.shape)} for name, value in self.arrays().items()
        }
        out["slow_points"] = None if self.slow_points is None else self.slow_points.to_json_dict()
        if self.all_samples is not None:
            out["all_samples"] = self.all_samples.to_json_dict()
        return out

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> FixedPoints:
        """Rebuild from :meth:`to_json_dict` output (``array_specs`` optional for hand-written JSON)."""
        specs = data.get("array_specs", {})
        arrays = {name: _array_from_json(value, specs.get(name)) for name, value in data["fields"].items()}
        slow, every = data.get("slow_points"), data.get("all_samples")
        return cls(
            **arrays,
            dynamics=data.get("dynamics", "discrete"),
            tol_q=data.get("tol_q", 1e-12),
            tol_unique=data.get("tol_unique", 1e-3),
            info=data.get("info", {}),
            slow_points=None if slow is None else cls.from_json_dict(slow),
            all_samples=None if every is None else cls.from_json_dict(every),
        )

    # --- display -------------------------------------------------------------------
    def summary(self) -> str:
        """A short, human-readable summary."""
        lines = [f"{self.n} fixed point{'s' if self.n != 1 else ''} in {self.n_states} dimensions ({self.dynamics})"]
        if self.is_stable is not None and self.n:
            n_stable = int(self.is_stable.sum())
            lines.append(f"  {n_stable} stable, {self.n - n_stable} unstable")
            if self.n_unstable is not None:
                counts = np.bincount(self.n_unstable.astype(int))
                index_text = ", ".join(f"{c} with {i}" for i, c in enumerate(counts) if c and i)
                if index_text:
                    lines.append(f"  unstable modes: {index_text}")
        if self.qstar is not None and self.n:
            lines.append(f"  q: max {self.qstar.max():.2e}, median {np.median(self.qstar):.2e}")
        if self.certified is not None and self.n:
            lines.append(f"  certified (quadratic convergence): {int(self.certified.sum())} of {self.n}")
        if self.is_nonisolated is not None and self.is_nonisolated.any():
            lines.append(f"  possibly non-isolated (eigenvalue near 1): {int(self.is_nonisolated.sum())}")
        if self.slow_points is not None:
            lines.append(f"  slow points (not fixed points): {self.slow_points.n}")
        for key in ("n_samples", "n_converged", "n_stalled", "n_capped", "wall_time_s"):
            if key in self.info:
                lines.append(f"  {key}: {self.info[key]}")
        if self.info.get("n_refined_in_float64"):
            lines.append(
                f"  certified in float64 (the search's dtype could not reach tol_q): "
                f"{self.info['n_refined_in_float64']}"
            )
        lines += [f"  warning: {warning}" for warning in self.info.get("warnings", [])]
        return "\n".join(lines)

    def print_summary(self) -> None:
        print(self.summary())

    def __repr__(self) -> str:
        return f"FixedPoints(n={self.n}, n_states={self.n_states}, dynamics={self.dynamics!r})"

    def plot(self, *args: Any, **kwargs: Any) -> Figure:
        """Plot in the top-3 PCA space of trajectories; see :func:`fpf_client.plotting.plot_fixed_points`."""
        from .plotting import plot_fixed_points

        return plot_fixed_points(self, *args, **kwargs)


_NON_FINITE_JSON = {"NaN": np.nan, "Infinity": np.inf, "-Infinity": -np.inf}


def _array_to_json(value: np.ndarray) -> Any:
    if np.iscomplexobj(value):
        return {"real": _array_to_json(value.real), "imag": _array_to_json(value.imag)}
    if value.dtype.kind != "f" or np.isfinite(value).all():
        return value.tolist()
    text = np.where(np.isnan(value), "NaN", np.where(value > 0, "Infinity", "-Infinity"))
    return np.where(np.isfinite(value), value.astype(object), text.astype(object)).tolist()


def _array_from_json(value: Any, spec: dict[str, Any] | None = None) -> np.ndarray:
    if isinstance(value, dict) and set(value) == {"real", "imag"}:
        real, imag = _array_from_json(value["real"]), _array_from_json(value["imag"])
        array = np.empty(real.shape, dtype=np.result_type(real, imag, np.complex64))
        array.real, array.imag = real, imag  # not real + 1j * imag, which loses the sign of -0.0 parts
    else:
        array = np.asarray(value)
        if array.dtype.kind in "OU":  # non-finite floats spelled as strings
            array = np.vectorize(lambda v: _NON_FINITE_JSON.get(v, v), otypes=[float])(np.array(value, dtype=object))
    if spec is not None:
        array = array.astype(np.dtype(spec["dtype"])).reshape(spec["shape"])
    return array


def reference_unique_indices(points: np.ndarray, q: np.ndarray, tol: float) -> np.ndarray:
    """FixedPointFinder's de-duplication: in row order, each point not yet matched is grouped
    with every unmatched point within ``tol`` in 2-norm, and the group's lowest-q point is kept.

    Parameters
    ----------
    points : ndarray, (n, k)
        Fixed points joined with their inputs.
    q : ndarray, (n,)

    Returns
    -------
    ndarray of int64: the kept rows, in the order their groups were formed.
    """
    matched = np.zeros(len(points), dtype=bool)
    kept: list[int] = []
    for i in range(len(points)):
        if matched[i]:
            continue
        open_ = np.flatnonzero(~matched)
        group = open_[np.linalg.norm(points[open_] - points[i], axis=1) <= tol]
        if len(group) == 0:  # a point with NaN coordinates matches nothing, itself included
            group = np.array([i])
        kept.append(int(group[np.argmin(q[group])]))
        matched[group] = True
    return np.asarray(kept, dtype=np.int64)


def _arrays_identical(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def _json_default(value: Any) -> Any:
    """Let run information carry numpy scalars and arrays."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = ["POINT_FIELDS", "FixedPoints", "reference_unique_indices"]
