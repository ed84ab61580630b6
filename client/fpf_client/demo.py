"""``fpf demo``: the 3-bit flip-flop walkthrough (Sussillo & Barak 2013) against a running service.

Small networks trained to hold three bits ship with the client, each with trials recorded from it,
so the demo needs neither torch nor training: it samples initial states from the recorded
trajectories (plus noise), finds the fixed points at zero input through the service, checks that
every memory of the task is a stable fixed point, and draws the figures.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from importlib.resources import as_file, files
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .client import Client
from .fixed_points import FixedPoints
from .progress import ProgressArg

#: The shipped networks, by ``--cell``.
CELLS: dict[str, str] = {"tanh": "16-unit tanh RNN", "gru": "16-unit GRU", "lstm": "16-unit LSTM"}

#: The 2^3 memories of the task: the corners of the cube {-1, +1}^3, in binary order.
CORNERS = np.array(list(itertools.product((-1.0, 1.0), repeat=3)))

_RECORDING_FIELDS = ("inputs", "targets", "states", "readout_weight", "readout_bias")


@dataclass(frozen=True)
class FlipFlopRecording:
    """Trials of the flip-flop task run through a trained network, with the network's linear readout.

    Attributes
    ----------
    inputs, targets : ndarray, (n_trials, n_time, n_bits)
        Pulses in {-1, 0, +1}, and the sign each output must hold.
    states : ndarray, (n_trials, n_time, n_states)
        The network's state after each step (for an LSTM, ``[h, c]``).
    readout_weight : ndarray, (n_bits, n_states)
    readout_bias : ndarray, (n_bits,)
        Outputs are ``states @ readout_weight.T + readout_bias``.
    """

    inputs: np.ndarray
    targets: np.ndarray
    states: np.ndarray
    readout_weight: np.ndarray
    readout_bias: np.ndarray

    @property
    def n_states(self) -> int:
        return int(self.states.shape[2])

    @property
    def n_bits(self) -> int:
        return int(self.inputs.shape[2])

    def outputs(self, states: np.ndarray | None = None) -> np.ndarray:
        """The readout of ``states: (..., n_states)`` (default: the recorded trajectories)."""
        states = self.states if states is None else np.asarray(states)
        readout: np.ndarray = states @ self.readout_weight.T + self.readout_bias
        return readout

    def save(self, path: str | PathLike[str]) -> None:
        """Write a compressed ``.npz``, no pickles: int8 pulses and targets, float16 states (half the bytes;
        ample for PCA and for initial states that get noise of 0.5 anyway), float32 readout."""
        np.savez_compressed(
            path,
            inputs=self.inputs.astype(np.int8),
            targets=self.targets.astype(np.int8),
            states=self.states.astype(np.float16),
            readout_weight=self.readout_weight.astype(np.float32),
            readout_bias=self.readout_bias.astype(np.float32),
        )

    @classmethod
    def load(cls, path: str | PathLike[str]) -> FlipFlopRecording:
        """Read a file written by :meth:`save`; every array comes back as float32."""
        with np.load(path, allow_pickle=False) as data:
            return cls(**{name: data[name].astype(np.float32) for name in _RECORDING_FIELDS})


def shipped_recording(cell: str) -> FlipFlopRecording:
    """The recording shipped with the client for ``cell`` (see :data:`CELLS`)."""
    with as_file(files(__package__) / "data" / f"flipflop_{_checked(cell)}.npz") as path:
        return FlipFlopRecording.load(path)


def _checked(cell: str) -> str:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {', '.join(CELLS)}, not {cell!r}")
    return cell


def initial_states(recording: FlipFlopRecording, n: int, noise_scale: float, seed: int = 0) -> np.ndarray:
    """``n`` states drawn from the recorded trajectories (any trial, any step) plus Gaussian noise, (n, n_states)."""
    rng = np.random.default_rng(seed)
    flat = recording.states.reshape(-1, recording.n_states)
    drawn = flat[rng.integers(len(flat), size=n)].astype(np.float32)
    return drawn + np.float32(noise_scale) * rng.standard_normal(drawn.shape, dtype=np.float32)


def nearest_corners(recording: FlipFlopRecording, states: np.ndarray) -> np.ndarray:
    """For each state (k, n_states), the index into :data:`CORNERS` nearest its readout, (k,)."""
    outputs = recording.outputs(states)
    nearest: np.ndarray = np.argmin(((outputs[:, None, :] - CORNERS[None]) ** 2).sum(axis=-1), axis=1)
    return nearest


def isolated(fixed_points: FixedPoints) -> FixedPoints:
    """The points that are isolated roots (not flagged with an eigenvalue at 1)."""
    if fixed_points.is_nonisolated is None:
        return fixed_points
    return fixed_points[~fixed_points.is_nonisolated.astype(bool)]


@dataclass
class Walkthrough:
    """What one walkthrough found and where it wrote its files."""

    label: str
    recording: FlipFlopRecording
    fixed_points: FixedPoints
    n_initial_states: int
    noise_scale: float
    job_id: str
    job_seconds: float
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def isolated(self) -> FixedPoints:
        """The isolated fixed points: what the figures show and the counts are about."""
        return isolated(self.fixed_points)

    @property
    def memory_corners(self) -> np.ndarray:
        """For each isolated stable point, the index of the corner nearest its readout."""
        return nearest_corners(self.recording, self.isolated.stable.xstar)

    @property
    def one_per_corner(self) -> bool:
        """Exactly one stable point nearest each of the 8 corners: the network's 8 memories."""
        return sorted(self.memory_corners.tolist()) == list(range(len(CORNERS)))

    def summary(self) -> str:
        """A few lines: the counts, whether every memory is a stable point, and the files written."""
        points = self.isolated
        n_stable = int(points.stable.n)
        lines = [
            f"{self.label}",
            (
                f"  {self.n_initial_states} initial states from {self.recording.states.shape[0]} trajectories"
                f" + noise {self.noise_scale:g}, zero input; job {self.job_id[:8]} took {self.job_seconds:.1f} s"
            ),
            f"  {points.n} fixed points: {n_stable} stable, {points.n - n_stable} unstable{_saddle_text(points)}",
        ]
        lines.append(f"  memories: {n_stable} stable, {self._corner_text()}")
        n_aside = self.fixed_points.n - points.n
        if n_aside:
            lines.append(f"  set aside: {n_aside} non-isolated points (an eigenvalue at 1: saturated gates)")
        lines += [f"  {name}: {path}" for name, path in self.files.items()]
        return "\n".join(lines)

    def _corner_text(self) -> str:
        if self.one_per_corner:
            return "one nearest each corner of the memory cube"
        counts = np.bincount(self.memory_corners, minlength=len(CORNERS))
        missing = ", ".join(_corner_name(int(i)) for i in np.flatnonzero(counts == 0))
        shared = ", ".join(_corner_name(int(i)) for i in np.flatnonzero(counts > 1))
        return "; ".join(
            text
            for text in (missing and f"corners without one: {missing}", shared and f"corners with several: {shared}")
            if text
        )


def _saddle_text(points: FixedPoints) -> str:
    if points.n_unstable is None or not (points.n_unstable > 0).any():
        return ""
    counts = np.bincount(points.n_unstable.astype(int))
    parts = [f"{count} with {index}" for index, count in enumerate(counts) if count and index]
    return f" (unstable modes: {', '.join(parts)})"


def _corner_name(index: int) -> str:
    return "(" + ", ".join(f"{int(v):+d}" for v in CORNERS[index]) + ")"


def find_fixed_points(
    client: Client,
    model: str | PathLike[str],
    recording: FlipFlopRecording,
    *,
    n_initial_states: int = 1024,
    noise_scale: float = 0.5,
    seed: int = 0,
    progress: ProgressArg = True,
    timeout: float | None = None,
    **options: Any,
) -> tuple[FixedPoints, str, float]:
    """Upload ``model``, search from noisy trajectory states at zero input, and fetch the result.

    Returns
    -------
    fixed_points : FixedPoints
    job_id : str
    seconds : float
        From submission to the end of the job, as seen by the client.
    """
    uploaded = client.upload_model(model, n_states=recording.n_states, n_inputs=recording.n_bits, timeout=timeout)
    states = initial_states(recording, n_initial_states, noise_scale, seed)
    start = time.perf_counter()
    job = client.submit(uploaded, states, np.zeros((1, recording.n_bits), dtype=np.float32), **options)
    job.wait(progress=progress, timeout=timeout)
    seconds = time.perf_counter() - start
    return job.result(), job.id, seconds


def draw_figures(walkthrough: Walkthrough, out_dir: Path, prefix: str) -> dict[str, Path]:
    """Write the example trial, the fixed points in PCA space and the eigenvalue spectra as PNG files."""
    from .plotting import plot_eigenvalues, plot_fixed_points, plot_trial

    recording, points = walkthrough.recording, walkthrough.isolated
    figures = {
        "example trial": plot_trial(
            recording.inputs[0],
            recording.targets[0],
            recording.outputs()[0],
            title=f"{walkthrough.label}: an example trial",
        ),
        "fixed points": plot_fixed_points(
            points,
            recording.states,
            mode_scale=_mode_scale(recording),
            max_trajectories=24,
            title=f"{walkthrough.label}: fixed points",
        ),
        "eigenvalues": plot_eigenvalues(points, title=f"{walkthrough.label}: eigenvalues of the Jacobians"),
    }
    paths = {}
    for name, figure in figures.items():
        paths[name] = out_dir / f"{prefix}_{name.replace(' ', '_')}.png"
        figure.savefig(paths[name], dpi=120, bbox_inches="tight")
    return paths


def _mode_scale(recording: FlipFlopRecording) -> float:
    """Half-length of the unstable-mode lines: a tenth of the trajectories' spread."""
    return 0.1 * float(np.linalg.norm(recording.states.reshape(-1, recording.n_states).std(axis=0)))


def run_walkthrough(
    client: Client,
    model: str | PathLike[str],
    recording: FlipFlopRecording,
    out_dir: str | PathLike[str],
    *,
    label: str,
    prefix: str,
    n_initial_states: int = 1024,
    noise_scale: float = 0.5,
    progress: ProgressArg = True,
    **find_options: Any,
) -> Walkthrough:
    """Find the fixed points of ``model`` through ``client``, save them and draw the figures into ``out_dir``.

    Files are named ``{prefix}_*.png`` and ``{prefix}_fixed_points.npz``; ``find_options`` go to
    :func:`find_fixed_points` (``seed``, ``timeout`` and :class:`~fpf_client.FinderOptions` fields).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fixed_points, job_id, seconds = find_fixed_points(
        client,
        model,
        recording,
        n_initial_states=n_initial_states,
        noise_scale=noise_scale,
        progress=progress,
        **find_options,
    )
    walkthrough = Walkthrough(label, recording, fixed_points, n_initial_states, noise_scale, job_id, seconds)
    walkthrough.files = draw_figures(walkthrough, out_dir, prefix)
    walkthrough.files["fixed points (npz)"] = out_dir / f"{prefix}_fixed_points.npz"
    fixed_points.save(walkthrough.files["fixed points (npz)"])
    return walkthrough


def run_demo(client: Client, cell: str, out_dir: str | PathLike[str], *, progress: ProgressArg = True) -> Walkthrough:
    """The walkthrough on the network shipped for ``cell``: what ``fpf demo`` runs."""
    recording = shipped_recording(cell)
    with as_file(files(__package__) / "data" / f"flipflop_{cell}.pt") as model:
        return run_walkthrough(
            client,
            model,
            recording,
            out_dir,
            label=f"3-bit flip-flop, {CELLS[cell]}",
            prefix=f"flipflop_{cell}",
            progress=progress,
        )


__all__ = [
    "CELLS",
    "CORNERS",
    "FlipFlopRecording",
    "Walkthrough",
    "draw_figures",
    "find_fixed_points",
    "initial_states",
    "isolated",
    "nearest_corners",
    "run_demo",
    "run_walkthrough",
    "shipped_recording",
]
