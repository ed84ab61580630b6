"""Sampling initial states from trajectories: shapes, masks, pairing, noise, no mutation."""

from __future__ import annotations

import numpy as np
import pytest

from workers.engine import sample_inputs_and_states, sample_states


def trajectories():
    traj = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    inputs = traj[..., :1] * 10
    return traj, inputs


def test_samples_come_from_valid_steps_only():
    traj, _ = trajectories()
    valid = np.zeros((2, 5), dtype=bool)
    valid[1, 3] = True
    states = sample_states(traj, 7, valid=valid, rng=0)
    assert states.shape == (7, 3)
    np.testing.assert_array_equal(states, np.repeat(traj[1, 3][None], 7, axis=0))


def test_inputs_and_states_are_paired_and_noise_goes_on_states():
    traj, inputs = trajectories()
    before = traj.copy()
    u, states = sample_inputs_and_states(inputs, traj, 50, noise_scale=0.1, rng=1)
    assert u.shape == (50, 1) and states.shape == (50, 3)
    clean = np.round(states[:, 0] / 3) * 3  # states[:, 0] is 3 * (time index) plus noise
    np.testing.assert_allclose(u[:, 0], clean * 10)
    assert 0.03 < np.std(states - np.round(states), axis=0).mean() < 0.2
    np.testing.assert_array_equal(traj, before)


def test_same_seed_same_samples_and_batch_of_one():
    traj, _ = trajectories()
    np.testing.assert_array_equal(sample_states(traj, 4, rng=5), sample_states(traj, 4, rng=5))
    assert sample_states(traj, 1, rng=0).shape == (1, 3)


def test_bad_arguments_are_refused():
    traj, inputs = trajectories()
    with pytest.raises(ValueError):
        sample_states(traj, 3, noise_scale=-1.0)
    with pytest.raises(ValueError):
        sample_states(traj, 3, valid=np.zeros((2, 5), dtype=bool))
    with pytest.raises(ValueError):
        sample_inputs_and_states(inputs[:1], traj, 3)
