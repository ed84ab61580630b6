"""Export a flip-flop step map as TorchScript, ONNX or a SavedModel, and its readout as ``.npz``.

Every format holds the same map ``forward(u: (n, 3), h: (n, d)) -> h_next: (n, d)`` with a
dynamic batch dimension, in the form fpf accepts at upload (docs/model-contract.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .networks import Cell, FlipFlopNetwork, readout_arrays, step_module

Format = Literal["torchscript", "onnx", "savedmodel"]
FORMATS: dict[str, str] = {"torchscript": ".pt", "onnx": ".onnx", "savedmodel": ".tar.gz"}


def export_network(network: FlipFlopNetwork, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``flipflop_{cell}.pt`` and ``flipflop_{cell}_readout.npz`` into ``out_dir``.

    The ``.pt`` file is ``torch.jit.script`` of the step map, loadable with ``torch.jit.load``
    without this package. The ``.npz`` holds ``weight: (3, d)`` and ``bias: (3,)`` so that
    outputs are ``states @ weight.T + bias`` (see :func:`load_readout`).
    """
    out_dir = Path(out_dir)
    model_path = export_step(network.cell, step_module(network), "torchscript", out_dir)
    readout_path = out_dir / f"flipflop_{network.cell}_readout.npz"
    np.savez(readout_path, **{name: value.numpy() for name, value in readout_arrays(network).items()})
    return model_path, readout_path


def export_step(cell: Cell, step: torch.nn.Module, format: Format, out_dir: str | Path) -> Path:
    """Write the eager ``step`` (from :func:`step_module`) as ``out_dir/flipflop_{cell}{suffix}`` in ``format``."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    path = Path(out_dir) / f"flipflop_{cell}{FORMATS[format]}"
    if format == "torchscript":
        torch.jit.save(torch.jit.script(step), str(path))
    elif format == "onnx":
        export_onnx(step, path)
    else:
        from .savedmodel import export_savedmodel

        export_savedmodel(cell, step, path)
    return path


def export_onnx(step: torch.nn.Module, path: str | Path) -> Path:
    """Export with torch's default (dynamo) exporter: inputs ``u``, ``h``, output ``h_next``, batch dynamic."""
    n_inputs, n_states = step_shapes(step)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings():  # the exporter warns about torchvision and its own internals
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            (torch.zeros(2, n_inputs), torch.zeros(2, n_states)),
            str(path),
            dynamo=True,
            input_names=["u", "h"],
            output_names=["h_next"],
            dynamic_shapes=({0: batch}, {0: batch}),
            external_data=False,
            verbose=False,
        )
    return Path(path)


def step_shapes(step: torch.nn.Module) -> tuple[int, int]:
    """``(n_inputs, n_states)`` of a step made by :func:`step_module` (an LSTM's state is ``[h, c]``)."""
    cell = getattr(step, "cell", step)
    return cell.input_size, cell.hidden_size * (2 if isinstance(cell, torch.nn.LSTMCell) else 1)


def load_readout(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The readout ``(weight: (n_bits, d), bias: (n_bits,))`` written by :func:`export_network`."""
    with np.load(path, allow_pickle=False) as data:
        return data["weight"], data["bias"]
