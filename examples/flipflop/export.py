"""Export a trained flip-flop network as a TorchScript step map and a readout ``.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .networks import FlipFlopNetwork, readout_arrays, step_module


def export_network(network: FlipFlopNetwork, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``flipflop_{cell}.pt`` and ``flipflop_{cell}_readout.npz`` into ``out_dir``.

    The ``.pt`` file is ``torch.jit.script`` of the step map ``forward(u: (n, 3), h: (n, d))
    -> h_next: (n, d)``, loadable with ``torch.jit.load`` without this package. The
    ``.npz`` holds ``weight: (3, d)`` and ``bias: (3,)`` so that outputs are
    ``states @ weight.T + bias`` (see :func:`load_readout`).
    """
    out_dir = Path(out_dir)
    model_path = out_dir / f"flipflop_{network.cell}.pt"
    readout_path = out_dir / f"flipflop_{network.cell}_readout.npz"
    torch.jit.save(torch.jit.script(step_module(network)), str(model_path))
    np.savez(readout_path, **{name: value.numpy() for name, value in readout_arrays(network).items()})
    return model_path, readout_path


def load_readout(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The readout ``(weight: (n_bits, d), bias: (n_bits,))`` written by :func:`export_network`."""
    with np.load(path, allow_pickle=False) as data:
        return data["weight"], data["bias"]
