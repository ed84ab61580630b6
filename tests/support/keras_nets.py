"""Keras 3 recurrent cells and layers exported as labs export them, and the same weights as TorchScript.

Each export is made by TensorFlow's or Keras's own public path (``tf.saved_model.save`` of a
``tf.Module`` whose ``tf.function`` step calls the cell or layer, or ``model.export`` of a
functional model) from seeded weights. Its reference is a TorchScript step written
independently from Keras's equations (gate order, ``reset_after``, bias layout) and loaded
with the weights the Keras layer holds, so any disagreement in fixed points is a fault of
fpf's SavedModel path, not of a shared implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

N_INPUTS, N_UNITS = 3, 4


@dataclass(frozen=True)
class KerasExport:
    """A Keras network's SavedModel directory and its TorchScript reference."""

    name: str
    directory: Path
    reference: torch.jit.ScriptModule
    n_states: int


# --- the references: Keras's equations in torch -------------------------------------------------


class SimpleRNNStep(torch.nn.Module):
    """keras.layers.SimpleRNNCell: h' = tanh(u K + h R + b)."""

    def __init__(self, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("kernel", torch.from_numpy(kernel))
        self.register_buffer("recurrent", torch.from_numpy(recurrent))
        self.register_buffer("bias", torch.from_numpy(bias))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(u @ self.kernel + h @ self.recurrent + self.bias)


class GRUStep(torch.nn.Module):
    """keras.layers.GRUCell, gates in Keras's order [z, r, candidate]; with ``reset_after`` the reset
    gate scales the recurrent term after the matrix product and the bias is (2, 3H)."""

    def __init__(self, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray, reset_after: bool) -> None:
        super().__init__()
        self.reset_after = reset_after
        self.units = recurrent.shape[0]
        self.register_buffer("kernel", torch.from_numpy(kernel))
        self.register_buffer("recurrent", torch.from_numpy(recurrent))
        bias2 = bias if reset_after else np.stack([bias, np.zeros_like(bias)])
        self.register_buffer("bias", torch.from_numpy(bias2))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        H = self.units
        x = u @ self.kernel + self.bias[0]
        x_z, x_r, x_h = x[:, :H], x[:, H : 2 * H], x[:, 2 * H :]
        if self.reset_after:
            inner = h @ self.recurrent + self.bias[1]
            z = torch.sigmoid(x_z + inner[:, :H])
            r = torch.sigmoid(x_r + inner[:, H : 2 * H])
            candidate = torch.tanh(x_h + r * inner[:, 2 * H :])
        else:
            z = torch.sigmoid(x_z + h @ self.recurrent[:, :H])
            r = torch.sigmoid(x_r + h @ self.recurrent[:, H : 2 * H])
            candidate = torch.tanh(x_h + (r * h) @ self.recurrent[:, 2 * H :])
        return z * h + (1 - z) * candidate


class LSTMStep(torch.nn.Module):
    """keras.layers.LSTMCell on the packed state [h, c], gates in Keras's order [i, f, c, o]."""

    def __init__(self, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.units = recurrent.shape[0]
        self.register_buffer("kernel", torch.from_numpy(kernel))
        self.register_buffer("recurrent", torch.from_numpy(recurrent))
        self.register_buffer("bias", torch.from_numpy(bias))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        H = self.units
        hh, c = h[:, :H], h[:, H:]
        z = u @ self.kernel + hh @ self.recurrent + self.bias
        i, f, g, o = (
            torch.sigmoid(z[:, :H]),
            torch.sigmoid(z[:, H : 2 * H]),
            torch.tanh(z[:, 2 * H : 3 * H]),
            torch.sigmoid(z[:, 3 * H :]),
        )
        c = f * c + i * g
        return torch.cat([o * torch.tanh(c), c], dim=1)


class StackedStep(torch.nn.Module):
    """Two steps, the first's new state the second's input; the state is [h_1, h_2]."""

    def __init__(self, first: torch.nn.Module, second: torch.nn.Module) -> None:
        super().__init__()
        self.units = N_UNITS
        self.first = first
        self.second = second

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h1 = self.first(u, h[:, : self.units])
        return torch.cat([h1, self.second(h1, h[:, self.units :])], dim=1)


# --- the exports --------------------------------------------------------------------------------


def _seeded(layer: Any, seed: int) -> list[np.ndarray]:
    """Give a built Keras layer seeded weights with a strong recurrent gain (several fixed points)."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in layer.get_weights():
        if weight.ndim == 2 and weight.shape[0] == N_UNITS:
            scale = 1.6 / np.sqrt(N_UNITS)
        elif weight.ndim == 2:
            scale = 1.0 / np.sqrt(weight.shape[0])
        else:
            scale = 0.2
        values.append(rng.normal(0.0, scale, weight.shape).astype(np.float32))
    layer.set_weights(values)
    return values


def _reference(cell: Any, weights: list[np.ndarray]) -> torch.nn.Module:
    import keras

    if isinstance(cell, keras.layers.SimpleRNNCell):
        return SimpleRNNStep(*weights)
    if isinstance(cell, keras.layers.GRUCell):
        return GRUStep(*weights, reset_after=cell.reset_after)
    return LSTMStep(*weights)


def _save_module(step: Callable, specs: list[Any], tracked: Any, directory: Path) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.tracked = tracked
    module.step = tf.function(step, input_signature=specs)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": module.step})
    return directory


def _cell_export(name: str, make_cell: Callable[[], Any], root: Path, seed: int) -> KerasExport:
    """A cell called by a tf.Module's tf.function step; an LSTM's state packed as [h, c]."""
    import tensorflow as tf

    cell = make_cell()
    lstm = "LSTM" in type(cell).__name__
    d = 2 * N_UNITS if lstm else N_UNITS
    cell.build((None, N_INPUTS))
    weights = _seeded(cell, seed)

    def step(u, h):
        states = [h[:, :N_UNITS], h[:, N_UNITS:]] if lstm else [h]
        _, new = cell(u, states)
        return {"h_next": tf.concat(new, axis=1)}

    specs = [tf.TensorSpec([None, N_INPUTS], tf.float32, name="u"), tf.TensorSpec([None, d], tf.float32, name="h")]
    return KerasExport(
        name, _save_module(step, specs, cell, root / name), torch.jit.script(_reference(cell, weights)), d
    )


def _lstm_two_arguments(root: Path, seed: int) -> KerasExport:
    """An LSTMCell whose signature takes h and c as two arguments and returns h_next and c_next."""
    import keras
    import tensorflow as tf

    cell = keras.layers.LSTMCell(N_UNITS)
    cell.build((None, N_INPUTS))
    weights = _seeded(cell, seed)

    def step(u, h, c):
        _, (h_next, c_next) = cell(u, [h, c])
        return {"h_next": h_next, "c_next": c_next}

    specs = [
        tf.TensorSpec([None, N_INPUTS], tf.float32, name="u"),
        tf.TensorSpec([None, N_UNITS], tf.float32, name="h"),
        tf.TensorSpec([None, N_UNITS], tf.float32, name="c"),
    ]
    name = "keras-lstm-cell-h-c"
    return KerasExport(
        name, _save_module(step, specs, cell, root / name), torch.jit.script(LSTMStep(*weights)), 2 * N_UNITS
    )


def _stacked(root: Path, seed: int) -> KerasExport:
    """keras.layers.StackedRNNCells of a GRUCell and a SimpleRNNCell; the state is [h_1, h_2]."""
    import keras
    import tensorflow as tf

    first, second = keras.layers.GRUCell(N_UNITS), keras.layers.SimpleRNNCell(N_UNITS)
    stacked = keras.layers.StackedRNNCells([first, second])
    stacked.build((None, N_INPUTS))
    reference = StackedStep(_reference(first, _seeded(first, seed)), _reference(second, _seeded(second, seed + 1)))

    def step(u, h):
        _, new = stacked(u, [[h[:, :N_UNITS]], [h[:, N_UNITS:]]])
        return {"h_next": tf.concat(tf.nest.flatten(new), axis=1)}

    specs = [
        tf.TensorSpec([None, N_INPUTS], tf.float32, name="u"),
        tf.TensorSpec([None, 2 * N_UNITS], tf.float32, name="h"),
    ]
    name = "keras-stacked-cells"
    return KerasExport(name, _save_module(step, specs, stacked, root / name), torch.jit.script(reference), 2 * N_UNITS)


def _gru_layer(root: Path, seed: int) -> KerasExport:
    """keras.layers.GRU(return_state=True) run on a length-1 sequence inside a tf.Module step."""
    import keras
    import tensorflow as tf

    layer = keras.layers.GRU(N_UNITS, return_state=True)
    layer.build((None, 1, N_INPUTS))
    weights = _seeded(layer, seed)

    def step(u, h):
        _, h_next = layer(u[:, None, :], initial_state=[h])
        return {"h_next": h_next}

    specs = [
        tf.TensorSpec([None, N_INPUTS], tf.float32, name="u"),
        tf.TensorSpec([None, N_UNITS], tf.float32, name="h"),
    ]
    name = "keras-gru-layer"
    return KerasExport(
        name,
        _save_module(step, specs, layer, root / name),
        torch.jit.script(GRUStep(*weights, reset_after=layer.cell.reset_after)),
        N_UNITS,
    )


def _model_export(kind: str, root: Path, seed: int) -> KerasExport:
    """A functional model (Input u (1, m), the state) exported with Keras's own ``model.export``;
    the LSTM's state is two inputs h and c."""
    import keras

    u = keras.Input((1, N_INPUTS), name="u")
    h = keras.Input((N_UNITS,), name="h")
    if kind == "lstm":
        c = keras.Input((N_UNITS,), name="c")
        layer = keras.layers.LSTM(N_UNITS, return_state=True)
        _, h_next, c_next = layer(u, initial_state=[h, c])
        model = keras.Model([u, h, c], {"h_next": h_next, "c_next": c_next})
    else:
        layer = keras.layers.GRU(N_UNITS, return_state=True)
        _, h_next = layer(u, initial_state=[h])
        model = keras.Model([u, h], {"h_next": h_next})
    weights = _seeded(layer, seed)
    name = f"keras-model-export-{kind}"
    model.export(str(root / name), format="tf_saved_model", verbose=False)
    reference = LSTMStep(*weights) if kind == "lstm" else GRUStep(*weights, reset_after=layer.cell.reset_after)
    return KerasExport(name, root / name, torch.jit.script(reference), (2 if kind == "lstm" else 1) * N_UNITS)


def keras_exports(root: Path) -> list[KerasExport]:
    """Every Keras export of the conformance matrix, written under ``root``."""
    import keras

    cells = {
        "keras-simple-rnn-cell": lambda: keras.layers.SimpleRNNCell(N_UNITS),
        "keras-gru-cell": lambda: keras.layers.GRUCell(N_UNITS),
        "keras-gru-cell-reset-before": lambda: keras.layers.GRUCell(N_UNITS, reset_after=False),
        "keras-lstm-cell-packed": lambda: keras.layers.LSTMCell(N_UNITS),
    }
    exports = [_cell_export(name, make, root, seed) for seed, (name, make) in enumerate(cells.items())]
    exports += [
        _lstm_two_arguments(root, 10),
        _stacked(root, 11),
        _gru_layer(root, 13),
        _model_export("gru", root, 14),
        _model_export("lstm", root, 15),
    ]
    return exports


__all__ = ["N_INPUTS", "N_UNITS", "KerasExport", "keras_exports"]
