"""Flip-flop networks (recurrent layer + linear readout) and their one-step maps.

A trained :class:`FlipFlopNetwork` runs whole sequences with torch's nn.RNN/GRU/LSTM.
:func:`step_module` turns its recurrent layer into the step map fpf analyses,
``forward(u: (n, m), h: (n, d)) -> h_next: (n, d)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Cell = Literal["tanh", "gru", "lstm"]
CELLS: tuple[Cell, ...] = ("tanh", "gru", "lstm")

_LAYERS: dict[str, type[nn.RNNBase]] = {"tanh": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


class FlipFlopNetwork(nn.Module):
    """A one-layer recurrent network with a linear readout, batch-first.

    Parameters
    ----------
    cell : {"tanh", "gru", "lstm"}
    n_hidden : int
        Units of the recurrent layer (the LSTM's step state has twice as many: [h, c]).
    n_bits : int
        Inputs and outputs.
    """

    def __init__(self, cell: Cell, n_hidden: int = 16, n_bits: int = 3) -> None:
        super().__init__()
        if cell not in _LAYERS:
            raise ValueError(f"cell must be one of {CELLS}, not {cell!r}")
        self.cell = cell
        self.rnn = _LAYERS[cell](n_bits, n_hidden, batch_first=True)
        self.readout = nn.Linear(n_hidden, n_bits)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Outputs (n, T, n_bits) for inputs (n, T, n_bits), from the zero state."""
        hidden, _ = self.rnn(inputs)
        return self.readout(hidden)


class LSTMStep(nn.Module):
    """An LSTM cell on the packed state ``h = [h, c]`` (d = 2 * hidden_size)."""

    def __init__(self, cell: nn.LSTMCell) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = cell.hidden_size

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_next, c_next = self.cell(u, (h[:, : self.hidden_size], h[:, self.hidden_size :]))
        return torch.cat([h_next, c_next], dim=1)


WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_CELLS: dict[str, type[nn.RNNCellBase]] = {"tanh": nn.RNNCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}


def step_module(network: FlipFlopNetwork) -> nn.Module:
    """The recurrent layer of ``network`` as a step map ``forward(u, h) -> h_next``.

    The layer's weights are copied into torch's matching cell (nn.RNNCell, nn.GRUCell,
    nn.LSTMCell), which computes one step of the layer's equations; a scripted cell keeps
    its ``input_size`` and ``hidden_size``, so fpf reads the shapes off the saved file.
    """
    layer = network.rnn
    return step_from_weights(network.cell, {name: getattr(layer, f"{name}_l0") for name in WEIGHT_NAMES})


def step_from_weights(cell: Cell, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The step map of ``cell`` with the given ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (torch layout)."""
    n_inputs, n_hidden = weights["weight_ih"].shape[1], weights["weight_hh"].shape[1]
    step_cell = _CELLS[cell](n_inputs, n_hidden, dtype=weights["weight_hh"].dtype)
    with torch.no_grad():
        for name in WEIGHT_NAMES:
            getattr(step_cell, name).copy_(weights[name])
    step_cell.requires_grad_(False)
    return (LSTMStep(step_cell) if cell == "lstm" else step_cell).eval()


def cell_weights(step: nn.Module) -> dict[str, torch.Tensor]:
    """The four weights of a step map made by :func:`step_module`, eager or loaded from TorchScript."""
    found = {key.rsplit(".", 1)[-1]: value.detach().clone() for key, value in step.state_dict().items()}
    return {name: found[name] for name in WEIGHT_NAMES}


def readout_arrays(network: FlipFlopNetwork) -> dict[str, torch.Tensor]:
    """Readout acting on the full step state: ``y = state @ weight.T + bias``.

    For the LSTM the cell-state columns are zero, so the same formula applies to [h, c].

    Returns
    -------
    dict with ``weight: (n_bits, d)`` and ``bias: (n_bits,)``
    """
    weight = network.readout.weight.detach().clone()
    if network.cell == "lstm":
        weight = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    return {"weight": weight, "bias": network.readout.bias.detach().clone()}


def run_steps(step: nn.Module, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """Iterate a step map over inputs (n, T, m) from h0 (n, d); returns the states (n, T, d)."""
    states = []
    h = h0
    for t in range(inputs.shape[1]):
        h = step(inputs[:, t], h)
        states.append(h)
    return torch.stack(states, dim=1)
