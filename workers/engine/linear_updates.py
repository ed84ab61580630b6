"""Predict one step of the network from the linearisation around its fixed points."""

from __future__ import annotations

import numpy as np

from fpf_client.fixed_points import FixedPoints


def approximate_updates(fps: FixedPoints, states: np.ndarray, inputs: np.ndarray | None = None) -> np.ndarray:
    """x_{t+1} ~= x* + J (x - x*) + dFdu (u - u*) around every fixed point.

    Parameters
    ----------
    fps : FixedPoints
        With ``J_xstar`` (and ``dFdu`` and ``inputs`` when ``inputs`` is given).
    states : ndarray, (n, d)
    inputs : ndarray, (1 | n, m), optional
        Without it the input term is dropped (inputs equal to each point's own).

    Returns
    -------
    ndarray, (k, n, d): the update predicted by each of the k fixed points for each state.
    """
    return fps.approximate_updates(states, inputs)
