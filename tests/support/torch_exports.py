"""torch networks exported with ``torch.export`` and ONNX, beside TorchScript references of the same weights.

``RecurrentStep`` runs an ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` for one step on the packed state
fpf uses for torch layers (docs/model-contract.md: ``[h_layer1, ..., h_layerL]``, LSTM
``[h_1..h_L, c_1..c_L]``), written out here so that the exported program does not share
fpf's own wrapper; the reference is the scripted layer itself, which fpf wraps.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

N_INPUTS, N_UNITS = 3, 4


class RecurrentStep(torch.nn.Module):
    """One time step of a recurrent layer on the packed state, ``forward(u, h) -> h_next``."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer
        self.lstm = isinstance(layer, torch.nn.LSTM)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        layers, units = self.layer.num_layers, self.layer.hidden_size
        x = u.unsqueeze(1) if self.layer.batch_first else u.unsqueeze(0)

        def unpack(part: torch.Tensor) -> torch.Tensor:
            return part.reshape(-1, layers, units).transpose(0, 1).contiguous()

        def pack(state: torch.Tensor) -> torch.Tensor:
            return state.transpose(0, 1).reshape(-1, layers * units)

        if self.lstm:
            _, (h_n, c_n) = self.layer(x, (unpack(h[:, : layers * units]), unpack(h[:, layers * units :])))
            return torch.cat([pack(h_n), pack(c_n)], dim=1)
        _, h_n = self.layer(x, unpack(h))
        return pack(h_n)


class LoopStep(torch.nn.Module):
    """A tanh RNN step run by a loop over the length-1 sequence ``u[None]``; scripted and exported by the
    legacy exporter it becomes an ONNX ``Loop``."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(1.6 * torch.randn(N_UNITS, N_UNITS, generator=generator) / N_UNITS**0.5)
        self.U = torch.nn.Parameter(torch.randn(N_INPUTS, N_UNITS, generator=generator) / N_INPUTS**0.5)
        self.b = torch.nn.Parameter(0.2 * torch.randn(N_UNITS, generator=generator))

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = u.unsqueeze(0)
        for t in range(x.shape[0]):
            h = torch.tanh(h @ self.W + x[t] @ self.U + self.b)
        return h


def seeded_layer(kind: str, *, num_layers: int, batch_first: bool, seed: int) -> torch.nn.Module:
    """An ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` with seeded weights (recurrent gain strong enough for several
    fixed points), in eval mode."""
    torch.manual_seed(seed)
    layer = getattr(torch.nn, kind)(N_INPUTS, N_UNITS, num_layers=num_layers, batch_first=batch_first)
    with torch.no_grad():
        for name, parameter in layer.named_parameters():
            if name.startswith("weight_hh"):
                parameter.normal_(0.0, 1.6 / N_UNITS**0.5)
    return layer.eval()


def n_states(layer: torch.nn.Module) -> int:
    return (2 if isinstance(layer, torch.nn.LSTM) else 1) * layer.num_layers * layer.hidden_size


def export_program(step: torch.nn.Module, d: int, m: int, path: Path) -> Path:
    """``torch.export.export`` with a dynamic batch dimension, saved by ``torch.export.save``."""
    batch = torch.export.Dim("batch")
    program = torch.export.export(step, (torch.zeros(2, m), torch.zeros(2, d)), dynamic_shapes=({0: batch}, {0: batch}))
    torch.export.save(program, str(path))
    return path


def export_onnx(
    step: torch.nn.Module, d: int, m: int, path: Path, *, dynamo: bool, opset: int, external_data: bool = False
) -> Path:
    """torch's default (dynamo) or legacy ONNX exporter at ``opset``, batch dynamic, tensors named u, h, h_next."""
    args = (torch.zeros(2, m), torch.zeros(2, d))
    names = {"input_names": ["u", "h"], "output_names": ["h_next"]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                step,
                args,
                str(path),
                dynamo=True,
                opset_version=opset,
                external_data=external_data,
                verbose=False,
                dynamic_shapes=({0: batch}, {0: batch}),
                **names,
            )
        else:
            axes = {name: {0: "n"} for name in ("u", "h", "h_next")}
            torch.onnx.export(step, args, str(path), dynamo=False, opset_version=opset, dynamic_axes=axes, **names)
    return path


__all__ = [
    "N_INPUTS",
    "N_UNITS",
    "LoopStep",
    "RecurrentStep",
    "export_onnx",
    "export_program",
    "n_states",
    "seeded_layer",
]
