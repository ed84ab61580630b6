"""Reading and checking a job's arrays before it is queued.

Uploaded ``.npz`` files are opened with ``allow_pickle=False`` and their headers are
read before their data, so neither pickled objects nor a small file that inflates to
a huge array get past the gateway.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from typing import BinaryIO

import numpy as np

from fpf_client.errors import InvalidArray, NonFinite, PayloadTooLarge, ShapeMismatch

ARRAY_NAMES = ("initial_states", "inputs", "cond_ids")

#: Rows of a JSON array converted in one step (the GIL is free between steps).
JSON_ROWS_PER_STEP = 512


def read_npz(
    source: BinaryIO, *, max_elements: int, max_bytes: int | None = None, admit: Callable[[int], None] | None = None
) -> dict[str, np.ndarray]:
    """The arrays of an uploaded ``.npz``: ``initial_states`` and optionally ``inputs``.

    Every member's ``.npy`` header is read first: the arrays' uncompressed size (what they will
    take in memory and on disk) must be within ``max_bytes``, and is passed to ``admit`` (the
    storage quota) before anything is decompressed.
    """
    try:
        archive = np.load(source, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InvalidArray(f"arrays is not a readable .npz file ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise InvalidArray("arrays must be an .npz archive, not a single .npy array")
    with archive:
        unknown = sorted(set(archive.files) - set(ARRAY_NAMES))
        if unknown:
            raise InvalidArray(f"arrays holds unexpected members {unknown}; allowed: {list(ARRAY_NAMES)}")
        expanded = sum(_check_header(archive, name, max_elements) for name in archive.files)
        if max_bytes is not None and expanded > max_bytes:
            raise PayloadTooLarge(
                f"arrays take {expanded} bytes uncompressed; the limit is {max_bytes}", field="arrays", limit=max_bytes
            )
        if admit is not None:
            admit(expanded)
        arrays = {}
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
                raise InvalidArray(f"{name} cannot be read: {exc}", field=name) from exc
    return arrays


def _check_header(archive: np.lib.npyio.NpzFile, name: str, max_elements: int) -> int:
    """Reject object dtypes and oversized arrays from the .npy header, before reading any data;
    the bytes the array takes once decompressed."""
    try:
        with archive.zip.open(f"{name}.npy") as member:
            version = np.lib.format.read_magic(member)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = reader(member)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidArray(f"{name} is not a valid .npy member: {exc}", field=name) from exc
    if dtype.hasobject:
        raise InvalidArray(f"{name} holds Python objects (pickled); send a numeric array", field=name)
    n_elements = int(np.prod(shape, dtype=np.int64))
    if n_elements > max_elements:
        raise PayloadTooLarge(
            f"{name} has {n_elements} elements; the limit is {max_elements}", field=name, limit=max_elements
        )
    return n_elements * dtype.itemsize


def from_json(name: str, rows: list[list[float]]) -> np.ndarray:
    """The rows of numbers of a JSON body (typed by ``JobRequest``) as a float64 array; empties ``rows``.

    Rows are converted ``JSON_ROWS_PER_STEP`` at a time from the end, and each step's Python floats
    are released as it goes: a single conversion of a large body would hold the GIL (and the
    gateway's event loop) for its whole length, and keep the lists and the array both in memory.
    """
    if not rows:
        return np.empty((0,))
    out = np.empty((len(rows), len(rows[0])), dtype=np.float64)
    for start in range((len(rows) - 1) // JSON_ROWS_PER_STEP * JSON_ROWS_PER_STEP, -1, -JSON_ROWS_PER_STEP):
        try:
            step = np.asarray(rows[start:], dtype=np.float64)
        except ValueError:
            step = None
        if step is None or step.shape != (len(rows) - start, out.shape[1]):
            raise InvalidArray(
                f"{name} must be a rectangular array of numbers: every row of {out.shape[1]} numbers, as the first",
                field=name,
            )
        out[start : start + len(step)] = step
        del rows[start:]
    return out


def check_job_arrays(
    initial_states: np.ndarray,
    inputs: np.ndarray | None,
    *,
    n_states: int | None,
    n_inputs: int | None,
    max_initial_states: int,
    max_n_states: int | None = None,
    max_n_inputs: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Check dtypes, shapes, finiteness and limits; return ``(initial_states, inputs)`` as floats.

    ``initial_states: (n, n_states)``; ``inputs: (1 | n, n_inputs)``, zeros when None. Over a
    limit (``n``, ``n_states``, ``n_inputs``) is ``payload_too_large`` naming the field and the limit.
    """
    initial_states = _as_float("initial_states", initial_states)
    if initial_states.ndim != 2 or initial_states.shape[0] == 0:
        raise ShapeMismatch(
            f"initial_states must have shape (n, n_states) with n >= 1; got {initial_states.shape}",
            field="initial_states",
        )
    n, d = initial_states.shape
    if n_states is not None and d != n_states:
        raise ShapeMismatch(f"initial_states has {d} columns; the model has {n_states} states", field="initial_states")
    if n > max_initial_states:
        raise PayloadTooLarge(
            f"{n} initial states; the limit is {max_initial_states}", field="initial_states", limit=max_initial_states
        )
    if max_n_states is not None and d > max_n_states:
        raise PayloadTooLarge(
            f"initial_states has {d} columns (states); the limit is {max_n_states}",
            field="initial_states",
            limit=max_n_states,
        )
    if inputs is None:
        inputs = np.zeros((1, n_inputs or 0), dtype=initial_states.dtype)
    inputs = _as_float("inputs", inputs)
    if inputs.ndim != 2 or inputs.shape[0] not in (1, n):
        raise ShapeMismatch(
            f"inputs must have shape (1 | {n}, n_inputs) (one row, or one per initial state); got {inputs.shape}",
            field="inputs",
        )
    if n_inputs is not None and inputs.shape[1] != n_inputs:
        raise ShapeMismatch(f"inputs has {inputs.shape[1]} columns; the model has {n_inputs} inputs", field="inputs")
    if max_n_inputs is not None and inputs.shape[1] > max_n_inputs:
        raise PayloadTooLarge(
            f"inputs has {inputs.shape[1]} columns; the limit is {max_n_inputs}", field="inputs", limit=max_n_inputs
        )
    for name, array in (("initial_states", initial_states), ("inputs", inputs)):
        if not np.isfinite(array).all():
            raise NonFinite(f"{name} holds NaN or infinite values", field=name)
    return initial_states, inputs


def check_cond_ids(cond_ids: np.ndarray | None, n: int) -> np.ndarray | None:
    """The caller's label of each initial state as int64 ``(n,)``, or None."""
    if cond_ids is None:
        return None
    cond_ids = np.asarray(cond_ids)
    if cond_ids.dtype.kind == "f" and np.isfinite(cond_ids).all() and (cond_ids == np.round(cond_ids)).all():
        cond_ids = cond_ids.astype(np.int64)
    if cond_ids.dtype.kind not in "iub":
        raise InvalidArray(f"cond_ids has dtype {cond_ids.dtype}; send integers", field="cond_ids")
    if cond_ids.ndim != 1 or cond_ids.shape[0] != n:
        raise ShapeMismatch(
            f"cond_ids must have shape ({n},) (one label per initial state); got {cond_ids.shape}", field="cond_ids"
        )
    return cond_ids.astype(np.int64)


def _as_float(name: str, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind in "fiu" and array.dtype != np.float16:
        return array if array.dtype.kind == "f" else array.astype(np.float64)
    raise InvalidArray(f"{name} has dtype {array.dtype}; send real numbers (float32, float64 or integers)", field=name)


def fingerprint(model_id: str, options: str, *arrays: np.ndarray) -> str:
    """A digest of what a job computes, independent of how the request was encoded."""
    digest = hashlib.sha256(f"{model_id}\n{options}\n".encode())
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.tobytes())
    return digest.hexdigest()
