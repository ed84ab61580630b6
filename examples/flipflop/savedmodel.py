"""The flip-flop step maps in TensorFlow, exported as a SavedModel archive.

The equations are torch's RNNCell, GRUCell and LSTMCell (same weight layout and gate order), so
the SavedModel computes the same map as the TorchScript and ONNX exports. TensorFlow is imported
only when a SavedModel is written.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .networks import Cell, cell_weights


def tf_step_module(cell: Cell, weights: dict[str, np.ndarray]) -> Any:
    """A ``tf.Module`` whose ``step(u: (n, m), h: (n, d)) -> {"h_next": (n, d)}`` is the cell's step, float32."""
    import tensorflow as tf

    n_inputs, n_hidden = weights["weight_ih"].shape[1], weights["weight_hh"].shape[1]
    n_states = 2 * n_hidden if cell == "lstm" else n_hidden

    class Step(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = {name: tf.Variable(value.astype(np.float32), name=name) for name, value in weights.items()}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, n_inputs], tf.float32, name="u"),
                tf.TensorSpec([None, n_states], tf.float32, name="h"),
            ]
        )
        def step(self, u: tf.Tensor, h: tf.Tensor) -> dict[str, tf.Tensor]:
            w = self.w
            gi = tf.matmul(u, w["weight_ih"], transpose_b=True) + w["bias_ih"]
            if cell == "lstm":
                hidden, c = h[:, :n_hidden], h[:, n_hidden:]
                gates = gi + tf.matmul(hidden, w["weight_hh"], transpose_b=True) + w["bias_hh"]
                i, f, g, o = tf.split(gates, 4, axis=1)
                c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
                return {"h_next": tf.concat([tf.sigmoid(o) * tf.tanh(c), c], axis=1)}
            gh = tf.matmul(h, w["weight_hh"], transpose_b=True) + w["bias_hh"]
            if cell == "tanh":
                return {"h_next": tf.tanh(gi + gh)}
            i_r, i_z, i_n = tf.split(gi, 3, axis=1)
            h_r, h_z, h_n = tf.split(gh, 3, axis=1)
            r, z = tf.sigmoid(i_r + h_r), tf.sigmoid(i_z + h_z)
            return {"h_next": (1 - z) * tf.tanh(i_n + r * h_n) + z * h}

    return Step()


def export_savedmodel(cell: Cell, step: torch.nn.Module, path: str | Path) -> Path:
    """Write ``step``'s map as a SavedModel directory packed in the ``.tar.gz`` at ``path`` (fpf's upload form)."""
    import tensorflow as tf

    path = Path(path)
    module = tf_step_module(cell, {name: value.numpy() for name, value in cell_weights(step).items()})
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / path.name.removesuffix(".tar.gz")
        tf.saved_model.save(module, str(directory), signatures={"serving_default": module.step})
        with tarfile.open(path, "w:gz") as archive:
            archive.add(directory, arcname=directory.name)
    return path
