"""FixedPoints with the reference's constructor, ``save`` / ``restore`` and attribute names.

Every method lives on fpf's own :class:`fpf_client.FixedPoints`; this subclass only accepts
the reference's constructor arguments (``n``, ``n_states``, ``n_inputs``, ``do_alloc_nan``,
``dtype``, ...) and reads the reference's pickled ``.fps`` files safely (:mod:`.fps_file`).
``save`` writes fpf's ``.npz`` (no pickles); ``restore`` reads either format.
"""

from __future__ import annotations

from os import PathLike
from typing import IO, Any

import numpy as np

from ..fixed_points import POINT_FIELDS
from ..fixed_points import FixedPoints as _FixedPoints
from .fps_file import read_fps_dict

#: Fields of a reference ``.fps`` dict that are per-point arrays here too.
_REFERENCE_FIELDS = (
    "xstar",
    "x_init",
    "inputs",
    "F_xstar",
    "qstar",
    "dq",
    "n_iters",
    "J_xstar",
    "dFdu",
    "eigval_J_xstar",
    "eigvec_J_xstar",
    "is_stable",
    "cond_id",
)


class FixedPoints(_FixedPoints):
    """fpf's FixedPoints, built the reference's way.

    Parameters
    ----------
    xstar, x_init, inputs, F_xstar, qstar, dq, n_iters, J_xstar, eigval_J_xstar, eigvec_J_xstar,
    is_stable, cond_id : ndarray, optional
        Per-point data, one row each.
    n, n_states, n_inputs : int, optional
        Sizes of the NaN-filled arrays ``do_alloc_nan=True`` allocates (otherwise read off the data).
    do_alloc_nan : bool
        Allocate every field filled with NaN.
    tol_unique : float
        2-norm tolerance of :meth:`find` and :meth:`get_unique`.
    dtype, dtype_complex : numpy dtype
        Of the allocated arrays (default: xstar's dtype, else float32 / complex64).
    verbose : bool
        Print what save and restore do.
    **fields
        fpf's other fields (``certified``, ``n_unstable``, ``dynamics``, ``info``, ...).
    """

    def __init__(
        self,
        xstar: Any = None,
        x_init: Any = None,
        inputs: Any = None,
        F_xstar: Any = None,
        qstar: Any = None,
        dq: Any = None,
        n_iters: Any = None,
        J_xstar: Any = None,
        eigval_J_xstar: Any = None,
        eigvec_J_xstar: Any = None,
        is_stable: Any = None,
        cond_id: Any = None,
        n: int | None = None,
        n_states: int | None = None,
        n_inputs: int | None = None,
        do_alloc_nan: bool = False,
        tol_unique: float = 1e-3,
        dtype: Any = None,
        dtype_complex: Any = None,
        verbose: bool = False,
        **fields: Any,
    ) -> None:
        given = {
            "x_init": x_init,
            "inputs": inputs,
            "F_xstar": F_xstar,
            "qstar": qstar,
            "dq": dq,
            "n_iters": n_iters,
            "J_xstar": J_xstar,
            "eigval_J_xstar": eigval_J_xstar,
            "eigvec_J_xstar": eigvec_J_xstar,
            "is_stable": is_stable,
            "cond_id": cond_id,
        }
        fields = {name: value for name, value in given.items() if value is not None} | fields
        self.verbose = verbose
        self.do_alloc_nan = do_alloc_nan
        if do_alloc_nan:
            if n is None or n_states is None or n_inputs is None:
                raise ValueError("do_alloc_nan=True needs n, n_states and n_inputs")
            real = np.dtype(dtype or np.float32)
            cplx = np.dtype(dtype_complex or np.result_type(real, np.complex64))
            shapes = {
                "xstar": (n_states,),
                "x_init": (n_states,),
                "inputs": (n_inputs,),
                "F_xstar": (n_states,),
                "qstar": (),
                "dq": (),
                "n_iters": (),
                "J_xstar": (n_states, n_states),
                "is_stable": (),
                "cond_id": (),
            }
            fields = {name: np.full((n, *shape), np.nan, dtype=real) for name, shape in shapes.items()} | fields
            fields.setdefault("eigval_J_xstar", np.full((n, n_states), np.nan, dtype=cplx))
            fields.setdefault("eigvec_J_xstar", np.full((n, n_states, n_states), np.nan, dtype=cplx))
            xstar = fields.pop("xstar")
        if xstar is None:
            xstar = np.zeros((0, n_states or 0), dtype=dtype or np.float32)
        super().__init__(xstar, tol_unique=tol_unique, **fields)
        self.dtype = np.dtype(dtype).type if dtype is not None else self.xstar.dtype.type
        self.dtype_complex = (
            np.dtype(dtype_complex).type if dtype_complex is not None else np.result_type(self.dtype, np.complex64).type
        )

    def save(self, save_path: str | PathLike[str] | IO[bytes]) -> None:
        """Write fpf's ``.npz`` (loadable without pickles, by :meth:`restore` or ``FixedPoints.load``)."""
        if self.verbose:
            print("Saving FixedPoints object.")
        super().save(save_path)

    def restore(self, restore_path: str | PathLike[str]) -> None:
        """Replace this object's data with a saved one: fpf's ``.npz`` or the reference's ``.fps``
        (read without running code; see :func:`~fpf_client.compat.fps_file.read_fps_dict`)."""
        if self.verbose:
            print("Restoring FixedPoints object.")
        restored = read_fps(restore_path)
        self.__dict__.update(restored.__dict__)

    @classmethod
    def from_fps_dict(cls, data: dict[str, Any]) -> FixedPoints:
        """Build from a reference ``.fps`` attribute dict (absent or None fields stay absent)."""
        arrays: dict[str, Any] = {
            name: np.asarray(data[name]) for name in _REFERENCE_FIELDS if data.get(name) is not None
        }
        if "is_stable" in arrays and arrays["is_stable"].dtype.kind == "f" and np.isfinite(arrays["is_stable"]).all():
            arrays["is_stable"] = arrays["is_stable"].astype(bool)
        dtype = data.get("dtype")
        return cls(
            arrays.pop("xstar", None),
            n_states=data.get("n_states"),
            tol_unique=data.get("tol_unique", 1e-3),
            dtype=dtype if isinstance(dtype, type) else None,
            verbose=bool(data.get("verbose", False)),
            **arrays,
        )


def read_fps(path: str | PathLike[str]) -> FixedPoints:
    """A saved point set: fpf's ``.npz`` (by its zip signature) or the reference's pickled ``.fps``."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] == b"PK\x03\x04":
        native = _FixedPoints.load(data)
        return FixedPoints(**{name: getattr(native, name) for name in native.kwargs})
    return FixedPoints.from_fps_dict(read_fps_dict(data))


__all__ = ["POINT_FIELDS", "FixedPoints", "read_fps"]
