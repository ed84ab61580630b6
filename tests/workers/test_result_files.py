"""Result files: what a sandboxed child sends is stored unchanged only when it is a result the engine
writes, member by member; anything else is refused, so no unknown member or pickle reaches a client."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable

import numpy as np
import pytest

from fpf_client.errors import ResultTooLarge
from fpf_client.fixed_points import FixedPoints
from workers.results import MalformedResult, ResultFile

NO_LIMIT = None


def points(k: int = 3, d: int = 4, *, partial: bool = False) -> FixedPoints:
    """A populated result with both nested results, as the engine returns them."""
    rng = np.random.default_rng(k)
    info = {"n_samples": 16, "partial": partial, **({"partial_reason": "soft time limit"} if partial else {})}
    return FixedPoints(
        xstar=rng.normal(size=(k, d)).astype(np.float32),
        qstar=rng.uniform(size=k),
        J_xstar=rng.normal(size=(k, d, d)).astype(np.float32),
        eigval_J_xstar=rng.normal(size=(k, d)).astype(np.complex64),
        is_stable=np.arange(k) % 2 == 0,
        n_iters=np.arange(k),
        info=info,
        slow_points=FixedPoints(xstar=rng.normal(size=(2, d)), qstar=np.array([1e-6, 2e-6])),
        all_samples=FixedPoints(xstar=rng.normal(size=(5, d)), qstar=rng.uniform(size=5)),
    )


def npz(members: dict[str, np.ndarray], *, compressed: bool = False, allow_pickle: bool = False) -> bytes:
    """An archive of ``members`` written member by member, as a child could."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w", compression=method) as archive:
        for name, array in members.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=allow_pickle)
    return out.getvalue()


def test_a_result_file_goes_through_unchanged_and_loads_as_the_same_points():
    expected = points(partial=True)
    written = ResultFile.of(expected, NO_LIMIT)
    verified = ResultFile.verified(written.npz, NO_LIMIT)
    assert bytes(verified.npz) == bytes(written.npz)
    assert FixedPoints.load(verified.npz) == expected
    assert (verified.partial, verified.partial_reason) == (True, "soft time limit")
    assert not ResultFile.verified(ResultFile.of(points(), NO_LIMIT).npz, NO_LIMIT).partial


def test_a_result_of_no_points_is_a_result():
    empty = FixedPoints(xstar=np.zeros((0, 4), dtype=np.float32), qstar=np.zeros(0))
    assert FixedPoints.load(ResultFile.verified(ResultFile.of(empty, NO_LIMIT).npz, NO_LIMIT).npz) == empty


def test_the_size_limit_counts_the_arrays_of_every_member():
    result = points()
    size = sum(array.nbytes for array in result.to_npz_arrays().values())
    npz_bytes = ResultFile.of(result, NO_LIMIT).npz
    assert ResultFile.verified(npz_bytes, size).npz is npz_bytes
    with pytest.raises(ResultTooLarge) as refused:
        ResultFile.verified(npz_bytes, size - 1)
    assert refused.value.extra["size_bytes"] == size
    with pytest.raises(ResultTooLarge):
        ResultFile.of(result, size - 1)


def _members() -> dict[str, np.ndarray]:
    return points().to_npz_arrays()


def _with(**changes: np.ndarray) -> Callable[[], bytes]:
    return lambda: npz({**_members(), **changes})


def _without(name: str) -> Callable[[], bytes]:
    return lambda: npz({key: value for key, value in _members().items() if key != name})


def _header_numpy_does_not_write() -> bytes:
    """A valid ``.npy`` in all but its header dict, which has one more key."""
    text = b"{'descr': '<f8', 'fortran_order': False, 'shape': (3,), 'payload': 1, }"
    header = b"\x93NUMPY\x01\x00" + len(text + b"\n").to_bytes(2, "little") + text + b"\n"
    members = {key: value for key, value in _members().items() if key != "qstar"}
    out = io.BytesIO(npz(members))
    with zipfile.ZipFile(out, "a") as archive:
        archive.writestr("qstar.npy", header + np.zeros(3).tobytes())
    return out.getvalue()


def _flipped_data_byte() -> bytes:
    data = bytearray(ResultFile.of(points(), NO_LIMIT).npz)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("xstar.npy")
    # the member's data ends just before the next local header; its last byte is one of xstar's floats
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 0xFF
    return bytes(data)


def _duplicate_member() -> bytes:
    out = io.BytesIO(npz(_members()))
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(out, "a") as archive,
        archive.open("qstar.npy", "w") as member,
    ):
        np.lib.format.write_array(member, np.zeros(3))  # as many rows as the first
    return out.getvalue()


MALFORMED: dict[str, Callable[[], bytes]] = {
    "not an archive": lambda: b"PK\x03\x04 not a zip at all",
    "truncated": lambda: bytes(ResultFile.of(points(), NO_LIMIT).npz)[:-40],
    "an unknown member": _with(payload=np.zeros(3)),
    "an unknown nested member": _with(**{"slow_points.payload": np.zeros(2)}),
    "a member nested twice": _with(**{"slow_points.slow_points.xstar": np.zeros((1, 4))}),
    "a compressed member": lambda: npz(_members(), compressed=True),
    "a pickled object array": lambda: npz({**_members(), "qstar": np.array([object()] * 3)}, allow_pickle=True),
    "a structured array": _with(qstar=np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])),
    "a datetime array": _with(qstar=np.zeros(3, dtype="datetime64[s]")),
    "a header numpy does not write": _header_numpy_does_not_write,
    "a field with too few rows": _with(qstar=np.zeros(2)),
    "a nested field with too many rows": _with(**{"all_samples.qstar": np.zeros(6)}),
    "no xstar": _without("xstar"),
    "xstar of one dimension": _with(xstar=np.zeros(3)),
    "a corrupted member": _flipped_data_byte,
    "the same member twice": _duplicate_member,
    "__meta__ not JSON": _with(__meta__=np.array("{not json")),
    "__meta__ of unknown keys": _with(__meta__=np.array('{"dynamics": "discrete", "payload": 1}')),
    "__meta__ as a list": _with(__meta__=np.array("[1, 2]")),
    "__meta__ as bytes": _with(__meta__=np.array(b'{"dynamics": "discrete"}')),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_a_result_file_the_engine_does_not_write_is_refused(case):
    with pytest.raises(MalformedResult, match="the sandbox sent"):
        ResultFile.verified(MALFORMED[case](), NO_LIMIT)


def test_arrays_in_fortran_order_are_results_too():
    members = {**_members(), "J_xstar": np.asfortranarray(points().J_xstar)}
    assert FixedPoints.load(ResultFile.verified(npz(members), NO_LIMIT).npz) == points()


def test_each_malformed_case_differs_from_a_valid_file_only_in_its_fault():
    """The cases above are built like a valid file: unchanged, the same builder's archive is accepted."""
    assert FixedPoints.load(ResultFile.verified(npz(_members()), NO_LIMIT).npz) == points()
