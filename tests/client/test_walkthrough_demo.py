"""The demo's data and analysis (fpf_client.demo), without a service.

The shipped recordings are checked against the shipped TorchScript models run by torch; the
sampling, corner assignment and summary against small constructed cases with known answers;
and the walkthrough's analysis, run by the engine in-process on the demo's own initial states,
must find the 8 memories for every cell.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.flipflop.export import load_readout
from examples.flipflop.networks import run_steps
from fpf_client import FixedPoints
from fpf_client.demo import (
    CELLS,
    CORNERS,
    FlipFlopRecording,
    Walkthrough,
    initial_states,
    isolated,
    nearest_corners,
    shipped_recording,
)
from workers.engine import find_fixed_points

DATA = Path(__file__).resolve().parents[1] / "data"
PACKAGE_DATA = files("fpf_client") / "data"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("cell", CELLS)
def test_the_client_ships_the_tested_models(cell: str) -> None:
    shipped = (PACKAGE_DATA / f"flipflop_{cell}.pt").read_bytes()
    assert _sha256(shipped) == _sha256((DATA / f"flipflop_{cell}.pt").read_bytes())


@pytest.mark.parametrize("cell", CELLS)
def test_recordings_are_the_models_own_trials(cell: str) -> None:
    recording = shipped_recording(cell)
    n_trials, n_time, _ = recording.states.shape
    assert (n_trials, n_time) == (64, 64) and recording.states.dtype == np.float32
    step = torch.jit.load(str(DATA / f"flipflop_{cell}.pt")).double()
    with torch.no_grad():
        states = run_steps(
            step,
            torch.as_tensor(recording.inputs, dtype=torch.float64),
            torch.zeros(n_trials, recording.n_states, dtype=torch.float64),
        ).numpy()
    np.testing.assert_allclose(recording.states, states, atol=2e-3)  # stored as float16
    weight, bias = load_readout(DATA / f"flipflop_{cell}_readout.npz")
    np.testing.assert_array_equal(recording.readout_weight, weight)
    np.testing.assert_array_equal(recording.readout_bias, bias)
    assert np.array_equal(np.sign(recording.outputs()), recording.targets)  # every bit held, every step
    assert set(np.unique(recording.inputs)) == {-1.0, 0.0, 1.0}


def _identity_recording(states: np.ndarray) -> FlipFlopRecording:
    """A recording whose readout is the first three state coordinates."""
    n_trials, n_time, d = states.shape
    pulses = np.zeros((n_trials, n_time, 3), dtype=np.float32)
    return FlipFlopRecording(
        pulses, pulses, states.astype(np.float32), np.eye(3, d, dtype=np.float32), np.zeros(3, dtype=np.float32)
    )


def test_recording_round_trips_through_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recording = _identity_recording(rng.uniform(-1, 1, (2, 5, 4)))
    recording.save(tmp_path / "r.npz")
    loaded = FlipFlopRecording.load(tmp_path / "r.npz")
    np.testing.assert_allclose(loaded.states, recording.states, rtol=1e-3)
    np.testing.assert_array_equal(loaded.readout_weight, recording.readout_weight)
    assert loaded.inputs.dtype == np.float32


def test_initial_states_are_recorded_states_plus_noise_of_the_given_scale() -> None:
    rng = np.random.default_rng(1)
    recording = _identity_recording(rng.integers(-3, 4, (4, 10, 6)).astype(float))
    exact = initial_states(recording, 500, noise_scale=0.0, seed=3)
    rows = {tuple(row) for row in recording.states.reshape(-1, 6)}
    assert exact.shape == (500, 6) and exact.dtype == np.float32
    assert all(tuple(row) in rows for row in exact)
    constant = _identity_recording(np.full((2, 3, 6), 2.0))
    noise = initial_states(constant, 20000, noise_scale=0.5, seed=3) - 2.0
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    assert np.array_equal(initial_states(recording, 10, 0.5, seed=4), initial_states(recording, 10, 0.5, seed=4))


def test_nearest_corners_follow_the_readout() -> None:
    recording = _identity_recording(np.zeros((1, 1, 5)))
    states = np.concatenate([0.8 * CORNERS[::-1], np.ones((8, 2))], axis=1)  # extra coordinates are not read
    assert nearest_corners(recording, states).tolist() == list(range(8))[::-1]


def _points(xstar: np.ndarray, stable: list[bool], nonisolated: list[bool]) -> FixedPoints:
    n = len(stable)
    return FixedPoints(
        xstar=xstar,
        is_stable=np.array(stable),
        is_nonisolated=np.array(nonisolated),
        n_unstable=np.where(stable, 0, 1),
        qstar=np.zeros(n),
    )


def _walkthrough(fixed_points: FixedPoints) -> Walkthrough:
    recording = _identity_recording(np.zeros((3, 4, 4)))
    return Walkthrough(
        "test network",
        recording,
        fixed_points,
        1024,
        0.5,
        "0123456789abcdef",
        1.5,
        files={"fixed points": Path("out/fp.png")},
    )


def test_summary_counts_isolated_points_and_names_the_memories() -> None:
    memories = np.concatenate([CORNERS, np.zeros((8, 1))], axis=1)
    saddle, continuum = np.array([[0.0, 0.0, 0.0, 0.0]]), np.array([[5.0, 5.0, 5.0, 5.0]])
    fps = _points(np.concatenate([memories, saddle, continuum]), [True] * 8 + [False, True], [False] * 9 + [True])
    walkthrough = _walkthrough(fps)
    assert isolated(fps).n == 9 and walkthrough.one_per_corner
    text = walkthrough.summary()
    assert "9 fixed points: 8 stable, 1 unstable (unstable modes: 1 with 1)" in text
    assert "memories: 8 stable, one nearest each corner of the memory cube" in text
    assert "set aside: 1 non-isolated points" in text
    assert "fixed points: out/fp.png" in text and "job 01234567 took 1.5 s" in text


def test_summary_names_a_corner_without_a_memory() -> None:
    memories = np.concatenate([CORNERS, np.zeros((8, 1))], axis=1)
    memories[7, :3] = CORNERS[6]  # two points nearest (+1, +1, -1), none nearest (+1, +1, +1)
    walkthrough = _walkthrough(_points(memories, [True] * 8, [False] * 8))
    assert not walkthrough.one_per_corner
    assert (
        "memories: 8 stable, corners without one: (+1, +1, +1); corners with several: (+1, +1, -1)"
        in walkthrough.summary()
    )


@pytest.mark.parametrize("cell", CELLS)
def test_the_walkthrough_analysis_finds_the_eight_memories(cell: str) -> None:
    """The demo's initial states, solved in-process: 8 isolated stable points, one nearest each corner."""
    torch.set_num_threads(1)
    recording = shipped_recording(cell)
    fps = find_fixed_points(
        torch.jit.load(str(DATA / f"flipflop_{cell}.pt")),
        initial_states(recording, 1024, noise_scale=0.5),
        np.zeros((1, 3), dtype=np.float32),
    )
    points = isolated(fps)
    assert points.stable.n == 8, f"{cell}: {points.stable.n} stable"
    assert sorted(nearest_corners(recording, points.stable.xstar).tolist()) == list(range(8))
    # A saddle with k unstable modes sits between memories: its readout is undecided (~0) on k bits.
    undecided = (np.abs(recording.outputs(points.unstable.xstar)) < 0.5).sum(axis=1)
    assert np.array_equal(undecided, points.unstable.n_unstable), cell


def test_demo_takes_the_url_before_or_after_its_name() -> None:
    from fpf_client.cli import build_parser

    parser = build_parser()
    after = parser.parse_args(["demo", "--url", "http://after:1", "--cell", "gru"])
    before = parser.parse_args(["--url", "http://before:1", "demo"])
    assert (after.url, after.cell, after.out) == ("http://after:1", "gru", Path("fpf-demo"))
    assert (before.url, before.cell) == ("http://before:1", "tanh")
