"""Read FixedPointFinder's ``.fps`` files (a pickled attribute dict) without running arbitrary code.

Unpickling can call any importable function, so a file from elsewhere is as dangerous as a
script. This reader builds only numpy arrays, numpy scalars and dtypes, and plain Python
containers and values; any other object in the file stops it with :class:`UnsafePickle`.
"""

from __future__ import annotations

import io
import pickle
from os import PathLike
from typing import IO, Any

#: (module, name) pairs a reference file needs: array and scalar reconstruction in numpy 1 and 2.
_NUMPY_BUILDERS = (
    {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")
    }
    | {(module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")}
    | {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
#: numpy scalar types stored as values (the reference keeps ``dtype=np.float32`` in its dict).
_NUMPY_TYPES = {
    "bool_",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "clongdouble",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
}
_NUMPY_TYPE_MODULES = ("numpy", "numpy.core.numerictypes", "numpy._core.numerictypes")
#: Plain values pickle protocols build by name (protocol 2 spells bytes as ``_codecs.encode(text, "latin1")``,
#: which only turns a string into bytes).
_PLAIN = {("builtins", name) for name in ("complex", "bytearray", "set", "frozenset", "slice", "range")}
_PLAIN.add(("_codecs", "encode"))


class UnsafePickle(pickle.UnpicklingError):
    """A ``.fps`` file asked to build something other than arrays and plain values."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = (
            (module, name) in _NUMPY_BUILDERS
            or (module, name) in _PLAIN
            or (module in _NUMPY_TYPE_MODULES and name in _NUMPY_TYPES)
        )
        if not allowed:
            raise UnsafePickle(
                f"refusing to load {module}.{name}: a .fps file may hold only numpy arrays and plain values "
                "(this one asks to build another object or call a function, which could run code)"
            )
        return super().find_class(module, name)


def read_fps_dict(file: str | PathLike[str] | IO[bytes] | bytes) -> dict[str, Any]:
    """The attribute dict a reference ``.fps`` file holds (Python 2 and 3 pickles).

    Raises
    ------
    UnsafePickle
        When the file holds anything but arrays and plain values.
    ValueError
        When the file is not a pickled dict.
    """
    if isinstance(file, (bytes, bytearray)):
        data = bytes(file)
    elif hasattr(file, "read"):
        data = file.read()
    else:
        with open(file, "rb") as handle:
            data = handle.read()
    try:
        loaded = _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickle:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(f"not a FixedPointFinder .fps file: {exc}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"not a FixedPointFinder .fps file: it holds a {type(loaded).__name__}, not a dict")
    return loaded
