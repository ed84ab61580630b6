"""The wire format between a worker and its sandboxed child: length-prefixed frames, never pickle.

A frame is a 12-byte prefix (big-endian: header length u32, payload length u64), a JSON
header (an object) and an opaque payload (model bytes, or ``.npz`` arrays). The child is
untrusted, so the reader bounds both lengths before allocating anything.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

_PREFIX = struct.Struct(">IQ")
#: Headers are small JSON objects (a model record, options, a progress report, a problem).
MAX_HEADER_BYTES = 1 << 20


class FrameError(Exception):
    """The stream ended or carried something that is not a well-formed frame."""


def write_frame(stream: BinaryIO, header: dict[str, Any], *payload: bytes | memoryview) -> None:
    """Send one frame and flush it; the payload is the parts of ``payload`` one after another (each
    written as it is, never joined into a copy)."""
    text = json.dumps(header).encode()
    stream.write(_PREFIX.pack(len(text), sum(memoryview(part).nbytes for part in payload)))
    stream.write(text)
    for part in payload:
        if memoryview(part).nbytes:
            stream.write(part)
    stream.flush()


def read_frame(stream: BinaryIO, max_payload_bytes: int) -> tuple[dict[str, Any], memoryview]:
    """Receive one frame: ``(header, payload)``.

    Raises
    ------
    FrameError
        At end of stream, on a truncated frame, a length over its bound or a header that is
        not a JSON object.
    """
    header_len, payload_len = _PREFIX.unpack(_read_exactly(stream, _PREFIX.size))
    if header_len > MAX_HEADER_BYTES or payload_len > max_payload_bytes:
        raise FrameError(f"frame of {header_len} + {payload_len} bytes is over the limit")
    try:
        header = json.loads(bytes(_read_exactly(stream, header_len)))
    except ValueError as exc:
        raise FrameError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FrameError("frame header is not a JSON object")
    return header, _read_exactly(stream, payload_len)


def _read_exactly(stream: BinaryIO, size: int) -> memoryview:
    """``size`` bytes, reading as often as it takes (an unbuffered pipe returns short reads), in the
    buffer they were read into."""
    view = memoryview(bytearray(size))
    done = 0
    while done < size:
        count = stream.readinto(view[done:])
        if not count:
            raise FrameError("the stream ended in the middle of a frame" if done else "the stream ended")
        done += count
    return view
