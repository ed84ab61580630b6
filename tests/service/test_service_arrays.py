"""The gateway's checks of uploaded arrays, before anything is queued."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from fpf_client.errors import InvalidArray, NonFinite, PayloadTooLarge, ShapeMismatch
from service.gateway.arrays import check_job_arrays, fingerprint, read_npz


def _npz(**arrays: np.ndarray) -> io.BytesIO:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    buffer.seek(0)
    return buffer


def test_a_small_file_that_inflates_to_a_huge_array_is_refused_from_its_header() -> None:
    bomb = _npz(initial_states=np.zeros((4000, 1000), dtype=np.float32))
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(PayloadTooLarge) as raised:
        read_npz(bomb, max_elements=1_000_000)
    assert raised.value.extra["limit"] == 1_000_000


def test_object_arrays_are_refused_before_unpickling() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, initial_states=np.array([{"a": 1}], dtype=object))
    buffer.seek(0)
    with pytest.raises(InvalidArray, match="objects"):
        read_npz(buffer, max_elements=100)


def test_a_lone_npy_file_is_not_an_archive() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 3)))
    buffer.seek(0)
    with pytest.raises(InvalidArray, match="npz"):
        read_npz(buffer, max_elements=100)


def test_a_corrupt_member_is_an_invalid_array() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("initial_states.npy", b"\x93NUMPY garbage")
    buffer.seek(0)
    with pytest.raises(InvalidArray):
        read_npz(buffer, max_elements=100)


def test_a_good_archive_round_trips() -> None:
    states = np.arange(6, dtype=np.float32).reshape(2, 3)
    arrays = read_npz(_npz(initial_states=states, inputs=np.ones((1, 1))), max_elements=100)
    np.testing.assert_array_equal(arrays["initial_states"], states)
    assert arrays["initial_states"].dtype == np.float32


def test_checks_fill_zero_inputs_and_keep_float32() -> None:
    states, inputs = check_job_arrays(np.zeros((3, 4), np.float32), None, n_states=4, n_inputs=2, max_initial_states=10)
    assert states.dtype == inputs.dtype == np.float32 and inputs.shape == (1, 2) and not inputs.any()
    states, _ = check_job_arrays(np.zeros((3, 4), np.int64), None, n_states=4, n_inputs=0, max_initial_states=10)
    assert states.dtype == np.float64


@pytest.mark.parametrize(
    "states, inputs, error",
    [
        (np.zeros((3,)), None, ShapeMismatch),
        (np.zeros((0, 4)), None, ShapeMismatch),
        (np.zeros((3, 5)), None, ShapeMismatch),
        (np.zeros((3, 4)), np.zeros((2, 2)), ShapeMismatch),
        (np.zeros((3, 4)), np.zeros((3, 1)), ShapeMismatch),
        (np.full((3, 4), np.nan), None, NonFinite),
        (np.zeros((3, 4)), np.array([[np.inf, 0.0]]), NonFinite),
        (np.zeros((3, 4), dtype=bool), None, InvalidArray),
        (np.zeros((3, 4), dtype=np.float16), None, InvalidArray),
        (np.zeros((11, 4)), None, PayloadTooLarge),
    ],
)
def test_bad_arrays(states: np.ndarray, inputs: np.ndarray | None, error: type[Exception]) -> None:
    with pytest.raises(error):
        check_job_arrays(states, inputs, n_states=4, n_inputs=2, max_initial_states=10)


def test_fingerprint_depends_on_content_not_on_encoding() -> None:
    a = np.arange(4.0).reshape(2, 2)
    assert fingerprint("m", "{}", a) == fingerprint("m", "{}", np.asfortranarray(a))
    assert fingerprint("m", "{}", a) != fingerprint("m", "{}", a.T)
    assert fingerprint("m", "{}", a) != fingerprint("m", '{"x": 1}', a)


@pytest.mark.parametrize(
    "states, inputs, field",
    [
        (np.zeros((2, 9)), None, "initial_states"),  # a model whose shapes are not known yet
        (np.zeros((2, 4)), np.zeros((1, 6)), "inputs"),
    ],
)
def test_dimensions_over_the_server_limits_are_payload_too_large(
    states: np.ndarray, inputs: np.ndarray | None, field: str
) -> None:
    with pytest.raises(PayloadTooLarge) as refused:
        check_job_arrays(
            states, inputs, n_states=None, n_inputs=None, max_initial_states=10, max_n_states=8, max_n_inputs=5
        )
    assert refused.value.extra == {"field": field, "limit": 8 if field == "initial_states" else 5}
    check_job_arrays(
        states[:, :8],
        None if inputs is None else inputs[:, :5],
        n_states=None,
        n_inputs=None,
        max_initial_states=10,
        max_n_states=8,
        max_n_inputs=5,
    )


def test_an_npz_is_bounded_and_admitted_by_its_uncompressed_size_before_it_is_decompressed() -> None:
    bomb = _npz(initial_states=np.zeros((4000, 4000)), inputs=np.zeros((1, 3), dtype=np.float32))
    expanded = 4000 * 4000 * 8 + 3 * 4
    assert len(bomb.getvalue()) < 200 * 2**10
    with pytest.raises(PayloadTooLarge) as raised:
        read_npz(bomb, max_elements=10**8, max_bytes=expanded - 1)
    assert raised.value.extra == {"field": "arrays", "limit": expanded - 1}

    class Refused(Exception):
        pass

    admitted = []

    def admit(n_bytes: int) -> None:
        admitted.append(n_bytes)
        raise Refused

    bomb.seek(0)
    with pytest.raises(Refused):
        read_npz(bomb, max_elements=10**8, max_bytes=expanded, admit=admit)
    assert admitted == [expanded]
    bomb.seek(0)
    assert read_npz(bomb, max_elements=10**8, max_bytes=expanded, admit=admitted.append)["initial_states"].shape == (
        4000,
        4000,
    )


def test_json_rows_convert_in_steps_to_the_same_array_and_ragged_rows_are_refused() -> None:
    from service.gateway.arrays import JSON_ROWS_PER_STEP, from_json

    n = 3 * JSON_ROWS_PER_STEP + 7
    expected = np.random.default_rng(0).normal(size=(n, 3))
    rows = expected.tolist()
    np.testing.assert_array_equal(from_json("initial_states", rows), expected)
    assert rows == []  # released as converted
    short_step = [[0.0, 1.0]] * JSON_ROWS_PER_STEP + [[0.0]] * JSON_ROWS_PER_STEP  # would broadcast
    for ragged in ([[0.0, 1.0], [0.0]], short_step):
        with pytest.raises(InvalidArray, match="rectangular"):
            from_json("initial_states", ragged)
