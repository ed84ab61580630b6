"""The worker <-> sandbox wire format: frames round-trip, and a reader refuses what a hostile child
could send instead (truncation, oversized lengths, non-JSON or non-object headers)."""

from __future__ import annotations

import io
import json
import os
import struct
import threading

import pytest

from workers.sandbox.frames import MAX_HEADER_BYTES, FrameError, read_frame, write_frame


def frames(*items: tuple[dict, bytes]) -> io.BytesIO:
    stream = io.BytesIO()
    for header, payload in items:
        write_frame(stream, header, payload)
    stream.seek(0)
    return stream


def raw(
    header: bytes, payload: bytes = b"", header_len: int | None = None, payload_len: int | None = None
) -> io.BytesIO:
    prefix = struct.pack(
        ">IQ", len(header) if header_len is None else header_len, len(payload) if payload_len is None else payload_len
    )
    return io.BytesIO(prefix + header + payload)


def test_frames_round_trip_in_order():
    stream = frames(({"type": "progress", "q": float("nan")}, b""), ({"type": "result"}, bytes(range(256)) * 10))

    first, empty = read_frame(stream, 1 << 20)
    second, payload = read_frame(stream, 1 << 20)

    assert first["type"] == "progress" and first["q"] != first["q"] and empty == b""
    assert second == {"type": "result"} and payload == bytes(range(256)) * 10
    with pytest.raises(FrameError, match="ended"):
        read_frame(stream, 1 << 20)


def test_a_pipe_delivering_a_large_frame_in_pieces_is_read_whole():
    """An unbuffered pipe returns short reads; the reader must keep reading."""
    read_fd, write_fd = os.pipe()
    payload = os.urandom(3 << 20)
    writer = threading.Thread(target=lambda: write_frame(os.fdopen(write_fd, "wb"), {"n": 1}, payload))
    writer.start()
    with os.fdopen(read_fd, "rb", buffering=0) as stream:
        header, received = read_frame(stream, 4 << 20)
    writer.join()
    assert header == {"n": 1} and received == payload


@pytest.mark.parametrize(
    "stream, message",
    [
        (io.BytesIO(raw(b'{"a": 1}').getvalue()[:-1]), "middle of a frame"),
        (io.BytesIO(struct.pack(">IQ", 2, 0)[:5]), "middle of a frame"),
        (raw(b"{}", header_len=MAX_HEADER_BYTES + 1), "over the limit"),
        (raw(b"{}", b"x" * 11), "over the limit"),
        (raw(b"not json"), "not JSON"),
        (raw(json.dumps([1, 2]).encode()), "not a JSON object"),
    ],
)
def test_malformed_frames_are_refused(stream, message):
    with pytest.raises(FrameError, match=message):
        read_frame(stream, max_payload_bytes=10)
