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
    if fps.J_xstar is None:
        raise ValueError("fps has no J_xstar; find them with do_compute_jacobians=True")
    states = np.atleast_2d(np.asarray(states, dtype=float))
    dx = states[None, :, :] - fps.xstar[:, None, :]
    out = fps.xstar[:, None, :] + np.einsum("kij,knj->kni", fps.J_xstar, dx)
    if inputs is not None:
        if fps.dFdu is None or fps.inputs is None:
            raise ValueError("fps has no dFdu; find them with do_compute_input_jacobians=True")
        du = np.atleast_2d(np.asarray(inputs, dtype=float))[None, :, :] - fps.inputs[:, None, :]
        out = out + np.einsum("kij,knj->kni", fps.dFdu, du)
    return out
