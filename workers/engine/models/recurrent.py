"""torch's recurrent layers and cells as step functions on one packed state vector.

A fixed-point search needs the whole recurrent state as one vector h of size d. The
layers are run for a single time step and their states packed layer by layer:

- ``nn.RNN`` / ``nn.GRU`` with L layers of H units: ``h = [h_1, ..., h_L]``, d = L·H.
- ``nn.LSTM``: ``h = [h_1, ..., h_L, c_1, ..., c_L]``, d = 2·L·H (with ``proj_size`` P > 0,
  the hidden parts have P units: d = L·P + L·H).
- ``nn.RNNCell`` / ``nn.GRUCell`` already have the step signature; ``nn.LSTMCell``
  is packed as ``[h, c]``, d = 2·H.

The input u is the layer's input at that time step (size ``input_size``); the layers'
``batch_first`` setting is honoured. Scripted (TorchScript) layers are recognised by
their original class name and constants, so a saved ``torch.jit.script(nn.GRU(...))``
works too.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fpf_client.errors import InvalidModel

_LAYERS = ("RNN", "GRU", "LSTM")
_CELLS = ("RNNCell", "GRUCell", "LSTMCell")


@dataclass(frozen=True)
class RecurrentShape:
    """What a recurrent layer or cell says about its sizes: enough to build and size a step."""

    kind: str
    input_size: int
    hidden_size: int
    num_layers: int = 1
    proj_size: int = 0

    @property
    def n_states(self) -> int:
        """d of the packed state."""
        out = self.proj_size or self.hidden_size
        if self.kind in ("LSTM", "LSTMCell"):
            return self.num_layers * (out + self.hidden_size)
        return self.num_layers * self.hidden_size


def recurrent_shape(module: object) -> RecurrentShape | None:
    """The sizes of a torch recurrent layer or cell (plain or scripted); None for anything else."""
    if not isinstance(module, torch.nn.Module):
        return None
    kind = _kind(module)
    if kind is None:
        return None
    return RecurrentShape(
        kind=kind,
        input_size=int(module.input_size),
        hidden_size=int(module.hidden_size),
        num_layers=int(getattr(module, "num_layers", 1)),
        proj_size=int(getattr(module, "proj_size", 0) or 0),
    )


def shape_from_parameters(module: torch.nn.Module) -> RecurrentShape | None:
    """The sizes of a recurrent layer or cell read off its weights, for traced modules, which keep
    the original class name and parameters but not the constants (input_size, ...)."""
    kind = getattr(module, "original_name", type(module).__name__)
    if kind not in _LAYERS + _CELLS:
        return None
    weights = dict(module.named_parameters(recurse=False))
    suffix = "_l0" if kind in _LAYERS else ""
    w_ih, w_hh = weights.get(f"weight_ih{suffix}"), weights.get(f"weight_hh{suffix}")
    if w_ih is None or w_hh is None or w_ih.dim() != 2 or w_hh.dim() != 2:
        return None
    gates = {"GRU": 3, "LSTM": 4}.get(kind.removesuffix("Cell"), 1)
    w_hr = weights.get("weight_hr_l0")
    return RecurrentShape(
        kind=kind,
        input_size=w_ih.shape[1],
        hidden_size=w_hh.shape[0] // gates,
        num_layers=sum(name.startswith("weight_hh_l") for name in weights) if kind in _LAYERS else 1,
        proj_size=w_hr.shape[0] if w_hr is not None else 0,
    )


def as_step_function(module: torch.nn.Module) -> torch.nn.Module:
    """A module with the step signature ``forward(u, h) -> h_next`` for a recurrent layer or cell.

    RNNCell and GRUCell are returned as they are; the others are wrapped.

    Raises
    ------
    InvalidModel
        For a bidirectional layer (its backward direction is not a map of the state).
    """
    shape = recurrent_shape(module)
    if shape is None:
        raise TypeError(f"{type(module).__name__} is not a torch recurrent layer or cell")
    if shape.kind in _LAYERS:
        if getattr(module, "bidirectional", False):
            raise InvalidModel("a bidirectional recurrent layer has no step map: use a unidirectional one")
        return LayerStep(module, shape)
    if shape.kind == "LSTMCell":
        return LSTMCellStep(module, shape)
    return module


class LayerStep(torch.nn.Module):
    """One time step of an nn.RNN / nn.GRU / nn.LSTM on the packed state (see module docs)."""

    def __init__(self, layer: torch.nn.Module, shape: RecurrentShape) -> None:
        super().__init__()
        self.layer = layer
        self.is_lstm = shape.kind == "LSTM"
        self.batch_first = bool(getattr(layer, "batch_first", False))
        self.num_layers = shape.num_layers
        self.out_size = shape.proj_size or shape.hidden_size
        self.method = _tensor_forward(layer)

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = u.unsqueeze(1) if self.batch_first else u.unsqueeze(0)
        run = getattr(self.layer, self.method)
        if not self.is_lstm:
            _, h_next = run(x, _unpack(h, self.num_layers))
            return _pack(h_next)
        split = self.num_layers * self.out_size
        state = (_unpack(h[:, :split], self.num_layers), _unpack(h[:, split:], self.num_layers))
        _, (h_next, c_next) = run(x, state)
        return torch.cat([_pack(h_next), _pack(c_next)], dim=1)


class LSTMCellStep(torch.nn.Module):
    """An nn.LSTMCell on the packed state ``[h, c]``."""

    def __init__(self, cell: torch.nn.Module, shape: RecurrentShape) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = shape.hidden_size

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_next, c_next = self.cell(u, (h[:, : self.hidden_size], h[:, self.hidden_size :]))
        return torch.cat([h_next, c_next], dim=1)


def _tensor_forward(layer: torch.nn.Module) -> str:
    """The name of the layer's forward on tensors: a scripted layer compiles its two
    overloads (tensor, PackedSequence) as ``forward__0`` / ``forward__1`` and has no ``forward``."""
    if not isinstance(layer, torch.jit.ScriptModule):
        return "forward"
    names = layer._c._method_names()
    if "forward" in names:
        return "forward"
    for name in names:
        if name.startswith("forward__"):
            arguments = getattr(layer, name).schema.arguments
            if len(arguments) > 1 and str(arguments[1].type) == "Tensor":
                return name
    raise InvalidModel(f"the scripted {layer.original_name} has no forward method on tensors")


def _unpack(h: torch.Tensor, num_layers: int) -> torch.Tensor:
    """(n, L·H) -> (L, n, H), the layout torch's layers take (sizes explicit: n may be 0)."""
    return h.reshape(h.shape[0], num_layers, h.shape[1] // num_layers).transpose(0, 1).contiguous()


def _pack(state: torch.Tensor) -> torch.Tensor:
    """(L, n, H) -> (n, L·H)."""
    layers, n, hidden = state.shape
    return state.transpose(0, 1).reshape(n, layers * hidden)


def _kind(module: torch.nn.Module) -> str | None:
    """The recurrent class a module is: by type, or for TorchScript by name plus its constants."""
    for cls in (torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM, torch.nn.RNNCell, torch.nn.GRUCell, torch.nn.LSTMCell):
        if type(module) is cls:
            return cls.__name__
    if isinstance(module, torch.jit.ScriptModule):
        name = getattr(module, "original_name", "")
        required = ("input_size", "hidden_size") + (("num_layers", "mode") if name in _LAYERS else ())
        if name in _LAYERS + _CELLS and all(hasattr(module, attr) for attr in required):
            return name
    return None
