"""``FixedPointFinder``: the reference's class, running fpf's engine (on a service or in-process)."""

from __future__ import annotations

import time
from collections.abc import Callable
from copy import deepcopy
from typing import Any

import numpy as np

from ..options import FinderOptions
from .backends import Backend, open_backend
from .fixed_points import FixedPoints
from .hps import REFERENCE_DEFAULTS, Printing, to_options
from .step import exact_step


class FixedPointFinder:
    """Find and analyse an RNN's fixed points, with FixedPointFinder's API.

    Parameters
    ----------
    rnn : torch module or model
        What the reference takes (an ``nn.RNN`` / ``nn.GRU`` stepped once with ``batch_first``
        honoured, or a cell), or anything fpf's client accepts: a step module
        ``forward(u, h) -> h_next``, a model file or the id of an uploaded model.
    url : str, optional
        An fpf service to run on (else ``$FPF_URL``, else the engine in this process).
    api_key, transport : optional
        As for :class:`fpf_client.Client`.
    **hps
        The reference's hyperparameters (see :meth:`default_hps`; ``method='joint'`` or
        ``'sequential'`` runs its Adam, no method runs fpf's default solver) and any fpf option
        (:class:`~fpf_client.FinderOptions`). Unknown names raise ``InvalidOptions``.
    """

    def __init__(
        self, rnn: Any, *, url: str | None = None, api_key: str | None = None, transport: str | None = None, **hps: Any
    ) -> None:
        self.rnn = rnn
        self.options, self._printing, self.reference_method = to_options(hps)
        given = {**REFERENCE_DEFAULTS, **hps}
        for name, value in given.items():  # the reference keeps each hyperparameter as an attribute
            setattr(self, name, value)
        self.dtype = self.options.dtype
        self.np_dtype = np.dtype(self.dtype)
        self.random_seed = self.options.random_seed
        self.rng = np.random.RandomState(self.random_seed)
        self.backend: Backend = open_backend(url, api_key, transport)

    @classmethod
    def default_hps(cls) -> dict[str, Any]:
        """The hyperparameters and their defaults (a fresh copy)."""
        return deepcopy(REFERENCE_DEFAULTS)

    # --- search -----------------------------------------------------------------------------------
    def find_fixed_points(
        self, initial_states: Any, inputs: Any, cond_ids: Any = None
    ) -> tuple[FixedPoints, FixedPoints | None]:
        """Search from every initial state; return ``(unique_fps, all_fps)``.

        Parameters
        ----------
        initial_states : ndarray, (n, n_states)
        inputs : ndarray, (1 | n, n_inputs)
        cond_ids : array of int, (n,), optional
            A label per initial state, carried to ``cond_id`` of both results.

        Returns
        -------
        unique_fps : FixedPoints
            The distinct points, chosen by the reference's rule (2-norm of (xstar, inputs) within
            ``tol_unique``, lowest q kept, distance and q outliers handled as it does) and analysed,
            with fpf's fields (``certified``, ``n_unstable``, ``is_nonisolated``) beside its own.
            ``info["method"]`` says which solver ran.
        all_fps : FixedPoints
            One row per initial state, in order: x_init, xstar, F_xstar, qstar, dq, n_iters, cond_id.
        """
        initial_states = np.asarray(initial_states)
        inputs = np.asarray(inputs)
        n = initial_states.shape[0]
        if inputs.ndim != 2 or inputs.shape[0] not in (1, n):
            raise ValueError(f"Incompatible inputs shape: {inputs.shape}; expected (1 or {n}, n_inputs)")
        if cond_ids is not None:
            cond_ids = np.asarray(cond_ids).reshape(-1)
        say = self._say
        say(f"\nSearching for fixed points from {n} initial states.\n")
        say(f"\tFinding fixed points with {self._method_text()} ({self.backend.where}).")
        started = time.time()
        # super_verbose prints Iter lines; verbose alone draws the client's bar for a service job
        printing = self._printing
        progress = _IterationPrinter(printing, started) if printing.super_verbose else printing.verbose
        found = self.backend.find(self.rnn, initial_states, inputs, cond_ids, self.options, progress)
        unique_fps = _as_compat(found)
        all_fps = _as_compat(found.all_samples) if found.all_samples is not None else None  # return_all_samples=False
        if cond_ids is None:  # as in the reference: no labels given, none reported
            unique_fps.cond_id = None
            if all_fps is not None:
                all_fps.cond_id = None
        info = found.info
        if self._printing.verbose:
            print(
                f"\t\t{info.get('iterations', 0)} iters, {info.get('n_converged', 0)} of {n} samples converged "
                f"(q < {self.options.tol_q:.0e}), {time.time() - started:.2e} sec"
            )
            print(f"\tIdentified {unique_fps.n} unique fixed points.")
            if self.options.do_compute_jacobians and unique_fps.n:
                print(f"\tComputed Jacobians at {unique_fps.n} unique fixed points.")
            if unique_fps.is_stable is not None:
                print(f"\t\t{int(unique_fps.is_stable.sum())} stable, {int((~unique_fps.is_stable).sum())} unstable.")
            for warning in info.get("warnings", []):
                print(f"\twarning: {warning}")
            print("\tFixed point finding complete.\n")
        return unique_fps, all_fps

    def _method_text(self) -> str:
        if self.reference_method == "joint":
            return "joint Adam optimization"
        if self.reference_method == "sequential":
            return "sequential Adam optimizations (one initial state at a time)"
        return f"fpf's {self.options.method!r} solver"

    def _say(self, text: str) -> None:
        if self._printing.verbose:
            print(text)

    # --- initial states ----------------------------------------------------------------------------
    def sample_states(
        self, state_traj: np.ndarray, n_inits: int, valid_bxt: np.ndarray | None = None, noise_scale: float = 0.0
    ) -> np.ndarray:
        """``n_inits`` states drawn (with replacement) from the valid time steps of
        ``state_traj: (n_batch, n_time, n_states)``, plus Gaussian noise of std ``noise_scale``.
        Draws come from ``self.rng`` (seeded by ``random_seed``) as the reference's do."""
        state_traj = np.asarray(state_traj)
        trial, step = self._sample_indices(state_traj.shape[:2], n_inits, valid_bxt)
        return self._add_noise(state_traj[trial, step].astype(np.float64), noise_scale)

    def sample_inputs_and_states(
        self,
        inputs: np.ndarray,
        state_traj: np.ndarray,
        n_inits: int,
        valid_bxt: np.ndarray | None = None,
        noise_scale: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paired ``(inputs, states)`` from the same time steps; noise goes on the states only."""
        inputs, state_traj = np.asarray(inputs), np.asarray(state_traj)
        if inputs.shape[:2] != state_traj.shape[:2]:
            raise ValueError(
                f"inputs {inputs.shape[:2]} and state_traj {state_traj.shape[:2]} must share (n_batch, n_time)"
            )
        trial, step = self._sample_indices(state_traj.shape[:2], n_inits, valid_bxt)
        states = self._add_noise(state_traj[trial, step].astype(np.float64), noise_scale)
        return inputs[trial, step].astype(np.float64), states

    def _sample_indices(
        self, shape: tuple[int, ...], n: int, valid_bxt: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if len(shape) != 2:
            raise ValueError("state_traj must have shape (n_batch, n_time, n_states)")
        valid = np.ones(shape, dtype=bool) if valid_bxt is None else np.asarray(valid_bxt).astype(bool)
        if valid.shape != tuple(shape):
            raise ValueError(f"valid_bxt.shape should be {tuple(shape)}, but is {valid.shape}")
        trial, step = np.nonzero(valid)
        if len(trial) == 0:
            raise ValueError("valid_bxt marks no time step to sample from")
        chosen = self.rng.randint(len(trial), size=n)
        return trial[chosen], step[chosen]

    def _add_noise(self, states: np.ndarray, noise_scale: float) -> np.ndarray:
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be non-negative, but was {noise_scale}")
        if noise_scale > 0:
            states = states + noise_scale * self.rng.randn(*states.shape)
        if np.isnan(states).any():
            raise ValueError("Detected NaNs in sampled states. Check state_traj and valid_bxt.")
        return states

    # --- linearised dynamics ----------------------------------------------------------------------
    def approximate_updates(
        self, states: np.ndarray, inputs: np.ndarray, fps: FixedPoints, do_compute_exact_update: bool = True
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The TF reference's one-step predictions x* + J (x - x*) + dFdu (u - u*) of every point in
        ``fps`` for every (state, input) pair, shape (k, n, n_states); with ``do_compute_exact_update``
        also the model's exact update F(x, u), shape (n, n_states), computed here with the torch module."""
        approx = fps.approximate_updates(states, inputs)
        if not do_compute_exact_update:
            return approx
        return approx, exact_step(self.rnn, np.atleast_2d(states), np.atleast_2d(inputs))

    # --- the reference's outlier helpers ---------------------------------------------------------
    @staticmethod
    def identify_q_outliers(fps: FixedPoints, q_thresh: float) -> np.ndarray:
        """Indices of points with qstar above ``q_thresh``."""
        return np.flatnonzero(fps._require("qstar") > q_thresh)

    @staticmethod
    def identify_q_non_outliers(fps: FixedPoints, q_thresh: float) -> np.ndarray:
        """Indices of points with qstar at most ``q_thresh``."""
        return np.flatnonzero(fps._require("qstar") <= q_thresh)

    @staticmethod
    def identify_distance_non_outliers(fps: FixedPoints, initial_states: np.ndarray, dist_thresh: float) -> np.ndarray:
        """Indices of points closer to the initial states' centroid than ``dist_thresh`` times the
        initial states' mean distance to it."""
        centroid = initial_states.mean(axis=0)
        mean_dist = np.linalg.norm(initial_states - centroid, axis=1).mean()
        return np.flatnonzero(np.linalg.norm(fps.xstar - centroid, axis=1) / mean_dist < dist_thresh)


class _IterationPrinter:
    """Prints a progress line, as the reference's ``super_verbose`` does, each time the search
    passes another ``n_iters_per_print_update`` iterations (reports arrive a few times a second)."""

    def __init__(self, printing: Printing, started: float) -> None:
        self.every = max(1, printing.n_iters_per_print_update)
        self.started = started
        self.printed = 0

    def __call__(self, report: Any) -> None:
        get: Callable[[str], Any] = report.get if isinstance(report, dict) else lambda name: getattr(report, name, None)
        iteration = get("iteration")
        if report is None or iteration is None or iteration // self.every <= self.printed // self.every:
            return
        self.printed = iteration
        q_median, q_max = get("q_median"), get("q_max")
        print(
            f"\tIter: {iteration} ({get('phase')}), q = {_num(q_median)} median, {_num(q_max)} max, "
            f"{get('n_converged')} of {get('n_total')} converged, "
            f"avg iter time = {(time.time() - self.started) / iteration:.2e} sec."
        )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2e}"


def _as_compat(found: Any) -> FixedPoints:
    """fpf's FixedPoints as the compat class (same arrays, no copy)."""
    return FixedPoints(**{name: getattr(found, name) for name in found.kwargs})


__all__ = ["FinderOptions", "FixedPointFinder"]
