"""The same small networks in torch and TensorFlow, and their exports, for the model-format tests.

Each network is fixed by one set of weights (torch gate order) and written three ways:
a hand-written torch step (``Cell``), torch's own recurrent layer run for one step
(``Layer``, exports to the ONNX RNN/GRU/LSTM ops) and a TensorFlow module (saved as a
SavedModel). All three compute the same map, so every export must give the same
fixed points, Jacobians and eigenvalues.
"""

from __future__ import annotations

import fcntl
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

KINDS = ("rnn", "gru", "lstm", "rate")
N_INPUTS, N_UNITS = 3, 6
_GATES = {"rnn": 1, "gru": 3, "lstm": 4, "rate": 1}
_LAYERS = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


def n_states(kind: str) -> int:
    return 2 * N_UNITS if kind == "lstm" else N_UNITS


def dynamics(kind: str) -> str:
    return "continuous" if kind == "rate" else "discrete"


def weights(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights in torch's layout; gains chosen so that the tanh networks have several isolated fixed points."""
    rng = np.random.default_rng(seed)
    rows = _GATES[kind] * N_UNITS
    gain = 1.8 if kind in ("rnn", "rate") else 1.0
    w = {
        "w_ih": rng.normal(0, 1 / np.sqrt(N_INPUTS), (rows, N_INPUTS)).astype(np.float32),
        "w_hh": rng.normal(0, gain / np.sqrt(N_UNITS), (rows, N_UNITS)).astype(np.float32),
        "b_ih": rng.normal(0, 0.1, rows).astype(np.float32),
        "b_hh": rng.normal(0, 0.1, rows).astype(np.float32),
    }
    if kind == "gru":
        # Open update gates and a strong candidate: isolated roots, not the saturated near-continuum
        # (z -> 1, F(h) ~ h) that a default GRU drifts into.
        w["b_hh"][N_UNITS : 2 * N_UNITS] -= 1.0
        w["w_hh"][2 * N_UNITS :] *= 2.0
    return w


class Cell(torch.nn.Module):
    """The network as a hand-written step ``forward(u, h) -> h_next`` (LSTM state packed as [h, c])."""

    def __init__(self, kind: str, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = kind
        self.n_units = N_UNITS
        for name, value in w.items():
            self.register_parameter(name, torch.nn.Parameter(torch.from_numpy(value.copy()), requires_grad=False))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gi = u @ self.w_ih.T + self.b_ih
        if self.kind == "rate":
            return -h + torch.tanh(h) @ self.w_hh.T + gi
        if self.kind == "lstm":
            hh, c = h[:, : self.n_units], h[:, self.n_units :]
            i, f, g, o = (gi + hh @ self.w_hh.T + self.b_hh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], 1)
        gh = h @ self.w_hh.T + self.b_hh
        if self.kind == "rnn":
            return torch.tanh(gi + gh)
        i_r, i_z, i_n = gi.chunk(3, 1)
        h_r, h_z, h_n = gh.chunk(3, 1)
        r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h


class Layer(torch.nn.Module):
    """The network as torch's nn.RNN/GRU/LSTM run for one step (exports to the ONNX recurrent ops)."""

    def __init__(self, kind: str, w: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = kind
        self.layer = getattr(torch.nn, _LAYERS[kind])(N_INPUTS, N_UNITS)
        with torch.no_grad():
            for name, value in w.items():
                getattr(self.layer, f"weight_{name[2:]}_l0" if name[0] == "w" else f"bias_{name[2:]}_l0").copy_(
                    torch.from_numpy(value)
                )

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "lstm":
            state = (h[:, :N_UNITS].unsqueeze(0).contiguous(), h[:, N_UNITS:].unsqueeze(0).contiguous())
            _, (h_n, c_n) = self.layer(u.unsqueeze(0), state)
            return torch.cat([h_n[0], c_n[0]], 1)
        _, h_n = self.layer(u.unsqueeze(0), h.unsqueeze(0))
        return h_n[0]


def export_onnx(module: torch.nn.Module, kind: str, path: Path, *, dynamo: bool) -> Path:
    """Export with torch's default (dynamo, opset 20) or legacy (opset 17) exporter, batch dynamic."""
    args = (torch.zeros(2, N_INPUTS), torch.zeros(2, n_states(kind)))
    names = {"input_names": ["u", "h"], "output_names": ["h_next"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                module,
                args,
                str(path),
                dynamo=True,
                external_data=False,
                verbose=False,
                dynamic_shapes=({0: batch}, {0: batch}),
                **names,
            )
        else:
            axes = {name: {0: "n"} for name in ("u", "h", "h_next")}
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=17, dynamic_axes=axes, **names)
    return path


def tf_module(kind: str, w: dict[str, np.ndarray], dtype: str = "float32"):
    """The network in TensorFlow, with ``step(u, h) -> {"h_next": ...}`` traced for any batch size."""
    import tensorflow as tf

    w = {name: value.astype(dtype) for name, value in w.items()}

    class Step(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = {name: tf.Variable(value, name=name) for name, value in w.items()}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, N_INPUTS], dtype, name="u"),
                tf.TensorSpec([None, n_states(kind)], dtype, name="h"),
            ]
        )
        def step(self, u: tf.Tensor, h: tf.Tensor) -> dict[str, tf.Tensor]:
            w = self.w
            gi = tf.matmul(u, w["w_ih"], transpose_b=True) + w["b_ih"]
            if kind == "rate":
                return {"h_next": -h + tf.matmul(tf.tanh(h), w["w_hh"], transpose_b=True) + gi}
            if kind == "lstm":
                hh, c = h[:, :N_UNITS], h[:, N_UNITS:]
                i, f, g, o = tf.split(gi + tf.matmul(hh, w["w_hh"], transpose_b=True) + w["b_hh"], 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                return {"h_next": tf.concat([tf.sigmoid(o) * tf.tanh(c), c], axis=1)}
            gh = tf.matmul(h, w["w_hh"], transpose_b=True) + w["b_hh"]
            if kind == "rnn":
                return {"h_next": tf.tanh(gi + gh)}
            i_r, i_z, i_n = tf.split(gi, 3, axis=1)
            h_r, h_z, h_n = tf.split(gh, 3, axis=1)
            r, z = tf.sigmoid(i_r + h_r), tf.sigmoid(i_z + h_z)
            return {"h_next": (1 - z) * tf.tanh(i_n + r * h_n) + z * h}

    return Step()


def export_savedmodel(kind: str, w: dict[str, np.ndarray], directory: Path, dtype: str = "float32") -> Path:
    import tensorflow as tf

    module = tf_module(kind, w, dtype)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.step})
    return directory


class SharedExports:
    """The exports of these networks (default weights), each written once per test run and shared by
    every test file and xdist worker that asks for it: the ONNX and SavedModel exports cost seconds of
    CPU each, and three test files load the same ones.

    Files live under ``root`` (a directory every worker of the run sees); an export is written under
    an exclusive lock of its own and marked done after, so a reader never sees half a file, and no
    file is changed once done.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def onnx(self, kind: str, form: str, exporter: str) -> Path:
        """``form`` ("cell" or "layer") of network ``kind`` by the "legacy" or "dynamo" exporter."""
        module = (Cell if form == "cell" else Layer)(kind, weights(kind))
        name = f"{kind}-{form}-{exporter}.onnx"
        return self._once(name, lambda path: export_onnx(module, kind, path, dynamo=exporter == "dynamo"))

    def savedmodel(self, kind: str) -> Path:
        """Network ``kind`` as a float32 SavedModel directory."""
        return self._once(f"{kind}-savedmodel", lambda path: export_savedmodel(kind, weights(kind), path))

    def _once(self, name: str, export: Callable[[Path], Path]) -> Path:
        path, done = self.root / name, self.root / f"{name}.done"
        with open(self.root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not done.exists():
                export(path)
                done.touch()
        return path
