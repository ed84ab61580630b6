"""Uploaded file names are kept in model records as a safe base name."""

from __future__ import annotations

import pytest

from service.gateway.operations import MAX_FILENAME_CHARS, safe_filename


@pytest.mark.parametrize(
    "given, kept",
    [
        ("model.pt", "model.pt"),
        ("../../../../tmp/x.pt", "x.pt"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\windows\\evil.onnx", "evil.onnx"),
        ("a/b/..", None),
        ("..", None),
        ("", None),
        (None, None),
        ("bell\x07and\nnewline.pt", "bellandnewline.pt"),
        ("x" * 1000 + ".pt", "x" * MAX_FILENAME_CHARS),
    ],
)
def test_file_names_lose_their_directories_and_control_characters(given: str | None, kept: str | None) -> None:
    assert safe_filename(given) == kept
