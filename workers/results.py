"""A job's result file: written from the engine's outcome, or checked when a sandboxed child made it.

The sandboxed child writes each job's ``.npz`` (:meth:`ResultFile.of`); the worker stores those
bytes unchanged once :meth:`ResultFile.verified` has read them as ``FixedPoints.load`` would and
found only its known members: the child runs a tenant's model, so what it sends is untrusted.
Nothing here imports the gateway's modules or torch.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpf_client.errors import FpfError, ResultTooLarge
from fpf_client.fixed_points import META_KEY, NESTED_PREFIXES, POINT_FIELDS, FixedPoints

#: The keys of a result's ``__meta__`` document (``FixedPoints``' scalar fields).
META_FIELDS = frozenset({"dynamics", "tol_q", "tol_unique", "info"})
#: Array kinds a result holds: bool, integers, floats, complex, and text (``__meta__``).
ARRAY_KINDS = frozenset("biufcU")
_MEMBER_SUFFIX = ".npy"
#: A result's ``.npy`` header is a short dict; numpy's own default bound.
_MAX_HEADER_BYTES = 10_000
_NPY_MAGIC = b"\x93NUMPY"
#: ``.npy`` format versions and the struct of their header length.
_HEADER_LENGTHS = {b"\x01\x00": struct.Struct("<H"), b"\x02\x00": struct.Struct("<I"), b"\x03\x00": struct.Struct("<I")}
#: The header dict ``np.save`` writes, padded with spaces to a line.
_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=]?[a-zA-Z]\d*)', 'fortran_order': (?:False|True), 'shape': \((|\d+,|\d+(?:, \d+)+)\), \} *\n"
)


class MalformedResult(FpfError):
    """The sandbox sent a result file that is not one the engine writes."""


@dataclass(frozen=True)
class ResultFile:
    """A job's result ``.npz`` (uncompressed, no pickles), and whether its search stopped early."""

    npz: bytes | memoryview
    partial: bool = False
    partial_reason: str | None = None

    @classmethod
    def of(cls, fixed_points: FixedPoints, max_bytes: int | None) -> ResultFile:
        """The result file of ``fixed_points``.

        Raises
        ------
        ResultTooLarge
            When its arrays would take more than ``max_bytes`` (``FPF_MAX_RESULT_BYTES``; None: no limit).
        """
        arrays = fixed_points.to_npz_arrays()
        _check_size(sum(array.nbytes for array in arrays.values()), fixed_points.n, max_bytes)
        out = io.BytesIO()
        np.savez(out, **arrays)  # uncompressed: floats hardly compress, and zlib costs a small job several ms
        return cls(out.getbuffer(), **_partial(fixed_points.info))

    @classmethod
    def verified(cls, npz: bytes | memoryview, max_bytes: int | None) -> ResultFile:
        """``npz`` as it came from a sandbox, once every member is known to be one :meth:`of` writes:
        a known field's name, stored uncompressed with a valid checksum, a plain numeric (or text)
        array, one row per point, within ``max_bytes`` in all, and a ``__meta__`` of known keys.

        Raises
        ------
        MalformedResult
            When it is not such a file (nothing of it is kept).
        ResultTooLarge
            When its arrays take more than ``max_bytes``.
        """
        try:
            with zipfile.ZipFile(io.BytesIO(npz)) as archive:
                groups = _read_members(archive)
        except (zipfile.BadZipFile, ValueError, TypeError, OSError, EOFError) as exc:
            raise MalformedResult(f"the sandbox sent a malformed result file: {exc}") from exc
        if "" not in groups:
            raise MalformedResult("the sandbox sent a result file without fixed points")
        rows = {prefix: _check_rows(prefix, group) for prefix, group in groups.items()}
        _check_size(sum(member.nbytes for group in groups.values() for member in group.values()), rows[""], max_bytes)
        meta = _meta(groups[""].get(META_KEY))
        return cls(npz, **_partial(meta.get("info", {})))


@dataclass(frozen=True)
class _Member:
    """A member's shape and dtype, read from its ``.npy`` header; its value only for ``__meta__``."""

    shape: tuple[int, ...]
    dtype: np.dtype
    value: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _read_members(archive: zipfile.ZipFile) -> dict[str, dict[str, _Member]]:
    """Every member of a result archive, by group (``""``, ``"slow_points."``, ``"all_samples."``) and name."""
    groups: dict[str, dict[str, _Member]] = {}
    for info in archive.infolist():
        prefix, name = _member_name(info.filename)
        group = groups.setdefault(prefix, {})
        if name in group:
            raise ValueError(f"{info.filename} appears twice")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise ValueError(f"{info.filename} is compressed")
        with archive.open(info) as member:  # reading it to the end checks its CRC
            data = member.read()
        shape, dtype, offset = _npy_header(data, info.filename)
        found = _Member(shape, dtype)
        if len(data) - offset != found.nbytes:
            raise ValueError(f"{info.filename} holds {len(data) - offset} bytes for a {dtype} array of shape {shape}")
        if name == META_KEY:
            if dtype.kind != "U" or found.shape != ():
                raise ValueError(f"{info.filename} is not one string")
            found = _Member(found.shape, dtype, np.frombuffer(data, dtype=dtype, offset=offset).reshape(()))
        group[name] = found
    return groups


def _npy_header(data: bytes, filename: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, dtype and data offset of a ``.npy`` member whose header is exactly as ``np.save``
    writes it (read without ``ast.literal_eval``, a third of the cost of a whole check)."""
    if data[:6] != _NPY_MAGIC or data[6:8] not in _HEADER_LENGTHS:
        raise ValueError(f"{filename} is not a .npy array")
    length_format = _HEADER_LENGTHS[data[6:8]]
    start = 8 + length_format.size
    (length,) = length_format.unpack_from(data, 8) if len(data) >= start else (-1,)
    header = _NPY_HEADER.fullmatch(data[start : start + length]) if 0 <= length <= _MAX_HEADER_BYTES else None
    if header is None:
        raise ValueError(f"{filename} has no .npy header as numpy writes it")
    descr, dims = header.groups()
    dtype = np.dtype(descr.decode())
    if dtype.hasobject or dtype.kind not in ARRAY_KINDS:
        raise ValueError(f"{filename} holds a {dtype} array")
    return tuple(int(dim) for dim in dims.split(b",") if dim), dtype, start + length


def _member_name(filename: str) -> tuple[str, str]:
    """A member's group prefix and field name; ValueError for any name ``FixedPoints`` does not write."""
    if not filename.endswith(_MEMBER_SUFFIX):
        raise ValueError(f"unexpected member {filename!r}")
    key = filename[: -len(_MEMBER_SUFFIX)]
    prefix = next((prefix for prefix in NESTED_PREFIXES if key.startswith(prefix)), "")
    name = key[len(prefix) :]
    if name not in POINT_FIELDS and name != META_KEY:
        raise ValueError(f"unexpected member {filename!r}")
    return prefix, name


def _check_rows(prefix: str, group: dict[str, _Member]) -> int:
    """The number of points of one group, whose fields must each hold one row per point."""
    xstar = group.get("xstar")
    if xstar is None or len(xstar.shape) != 2:
        raise MalformedResult(f"the sandbox sent a result whose {prefix}xstar is missing or not 2-D")
    n = xstar.shape[0]
    for name, member in group.items():
        if name != META_KEY and member.shape[:1] != (n,):
            raise MalformedResult(f"the sandbox sent a result whose {prefix}{name} does not hold {n} rows")
    return n


def _meta(member: _Member | None) -> dict[str, Any]:
    """A result's ``__meta__`` document: a JSON object of known keys (empty when absent)."""
    if member is None:
        return {}
    try:
        meta = json.loads(str(member.value))
    except ValueError as exc:
        raise MalformedResult(f"the sandbox sent a result whose {META_KEY} is not JSON: {exc}") from exc
    if not isinstance(meta, dict) or not set(meta) <= META_FIELDS or not isinstance(meta.get("info", {}), dict):
        raise MalformedResult(f"the sandbox sent a result whose {META_KEY} is not a result's")
    return meta


def _check_size(size: int, n_points: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ResultTooLarge(
            f"the result of {n_points} fixed points would take {size} bytes; the limit is {max_bytes} "
            "(ask for fewer points with max_n_unique, or leave out Jacobians with do_compute_jacobians=false)",
            limit=max_bytes,
            size_bytes=size,
        )


def _partial(info: dict[str, Any]) -> dict[str, Any]:
    """The ``partial`` and ``partial_reason`` of a result's run information."""
    reason = info.get("partial_reason")
    return {"partial": bool(info.get("partial")), "partial_reason": None if reason is None else str(reason)}
