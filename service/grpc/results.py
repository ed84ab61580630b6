"""Reading a result ``.npz`` member by member, in chunks, for the ``GetResult`` stream.

Each member's ``.npy`` header is parsed and its data read straight from the (deflated) zip
member, so a 256 MiB Jacobian is sent without ever being held whole in the server's memory.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bytes of array data per message: well under gRPC's default 4 MiB receive limit.
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Chunk:
    """A piece of one array; ``dtype`` and ``shape`` are set on the array's first piece only."""

    name: str
    offset: int
    data: bytes
    dtype: str = ""
    shape: tuple[int, ...] = ()


def result_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Chunk]:
    """Every array of the ``.npz`` at ``path``, in order, as little-endian C-order chunks."""
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            name = member.removesuffix(".npy")
            with archive.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (
                    np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                )
                shape, fortran_order, dtype = read_header(stream)
                if dtype.hasobject:
                    raise ValueError(f"{name} holds Python objects")
                if not fortran_order and dtype.newbyteorder("<") == dtype:
                    yield from _raw(name, stream, dtype, shape, chunk_bytes)
                    continue
            with archive.open(member) as stream:
                yield from _converted(name, np.lib.format.read_array(stream, allow_pickle=False), chunk_bytes)


def _raw(name: str, stream, dtype: np.dtype, shape: tuple[int, ...], chunk_bytes: int) -> Iterator[Chunk]:
    """Chunks of data already in the wire's layout, read as they are."""
    total = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    step = max(dtype.itemsize, chunk_bytes - chunk_bytes % dtype.itemsize)
    offset = 0
    while True:
        data = stream.read(min(step, total - offset))
        first = offset == 0
        if not data and not first:
            break
        yield Chunk(name, offset, data, dtype.str if first else "", shape if first else ())
        offset += len(data)
        if offset >= total:
            break
    if offset != total:
        raise ValueError(f"{name} is truncated: {offset} of {total} bytes")


def _converted(name: str, array: np.ndarray, chunk_bytes: int) -> Iterator[Chunk]:
    """Chunks of an array stored big-endian or in Fortran order, converted first."""
    little = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    data = memoryview(little.reshape(-1).view(np.uint8))
    for offset in range(0, max(len(data), 1), chunk_bytes):
        first = offset == 0
        yield Chunk(
            name,
            offset,
            bytes(data[offset : offset + chunk_bytes]),
            little.dtype.str if first else "",
            little.shape if first else (),
        )
