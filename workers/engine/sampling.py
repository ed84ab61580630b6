"""Initial states for a search: random samples from the network's own state trajectories.

Same contract as FixedPointFinder's ``sample_states`` / ``sample_inputs_and_states`` (whose
versions crash in the torch port), as free functions with an explicit random generator.
"""

from __future__ import annotations

import numpy as np


def sample_states(
    trajectories: np.ndarray,
    n: int,
    *,
    valid: np.ndarray | None = None,
    noise_scale: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """Draw ``n`` states (with replacement) from valid time steps, plus optional Gaussian noise.

    Parameters
    ----------
    trajectories : ndarray, (n_batch, n_time, d)
    n : int
        Number of states to draw.
    valid : ndarray of bool, (n_batch, n_time), optional
        Time steps that may be drawn; all by default.
    noise_scale : float
        Standard deviation of i.i.d. Gaussian noise added to the states.
    rng : Generator or seed, optional

    Returns
    -------
    ndarray, (n, d): a new array (the trajectories are not modified).
    """
    rng = np.random.default_rng(rng)
    trial, time = _draw(trajectories.shape[:2], n, valid, rng)
    return _add_noise(np.asarray(trajectories)[trial, time], noise_scale, rng)


def sample_inputs_and_states(
    inputs: np.ndarray,
    trajectories: np.ndarray,
    n: int,
    *,
    valid: np.ndarray | None = None,
    noise_scale: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` paired (input, state) samples from the same time steps; noise goes on states only.

    Parameters
    ----------
    inputs : ndarray, (n_batch, n_time, m)
    trajectories : ndarray, (n_batch, n_time, d)
    n, valid, noise_scale, rng
        As in :func:`sample_states`.

    Returns
    -------
    inputs : ndarray, (n, m)
    states : ndarray, (n, d)
    """
    inputs = np.asarray(inputs)
    if inputs.shape[:2] != np.shape(trajectories)[:2]:
        raise ValueError(
            f"inputs {inputs.shape[:2]} and trajectories {np.shape(trajectories)[:2]} must share (n_batch, n_time)"
        )
    rng = np.random.default_rng(rng)
    trial, time = _draw(inputs.shape[:2], n, valid, rng)
    states = _add_noise(np.asarray(trajectories)[trial, time], noise_scale, rng)
    return inputs[trial, time].copy(), states


def _draw(
    shape: tuple[int, ...], n: int, valid: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    if len(shape) != 2:
        raise ValueError("trajectories must have shape (n_batch, n_time, d)")
    mask = np.ones(shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != tuple(shape):
        raise ValueError(f"valid has shape {mask.shape}; expected {tuple(shape)}")
    trial, time = np.nonzero(mask)
    if len(trial) == 0:
        raise ValueError("no valid time step to sample from")
    pick = rng.integers(len(trial), size=n)
    return trial[pick], time[pick]


def _add_noise(states: np.ndarray, noise_scale: float, rng: np.random.Generator) -> np.ndarray:
    if noise_scale < 0:
        raise ValueError(f"noise_scale must be non-negative, got {noise_scale}")
    states = states.astype(np.result_type(states.dtype, np.float32), copy=True)
    if noise_scale > 0:
        states += noise_scale * rng.standard_normal(states.shape)
    if np.isnan(states).any():
        raise ValueError("sampled states contain NaN; check trajectories and valid")
    return states
