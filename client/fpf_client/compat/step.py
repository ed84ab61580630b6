"""One exact step of the caller's torch model, run in this process (``approximate_updates``).

The search itself may run on a service, but the exact one-step update the reference's
``approximate_updates`` returns beside its linear predictions needs the model at hand: a torch
module the caller passed. torch is taken from ``sys.modules``: a module can only exist if the
caller imported it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def exact_step(model: Any, states: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """F(x, u) for each row of ``states: (n, d)`` and ``inputs: (1 | n, m)``.

    ``nn.RNN`` / ``nn.GRU`` layers run one time step on the layer-packed state (``batch_first``
    honoured); cells and step modules are called as ``forward(u, h)``.

    Raises
    ------
    ValueError
        When ``model`` is not a torch module in this process (a file or an uploaded model's id),
        or is an LSTM layer, whose packed state this does not unpack.
    """
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(model, torch.nn.Module):
        raise ValueError(
            "the exact update runs the model in this process and needs the torch module itself, "
            "not a file or an uploaded model's id: pass do_compute_exact_update=False"
        )
    if isinstance(model, torch.nn.LSTM):
        raise ValueError("the exact update of an nn.LSTM layer is not supported: pass do_compute_exact_update=False")
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    h = torch.as_tensor(np.asarray(states), dtype=dtype, device=device)
    u = torch.as_tensor(np.asarray(inputs), dtype=dtype, device=device).expand(h.shape[0], -1)
    n = h.shape[0]
    with torch.no_grad():
        if isinstance(model, torch.nn.RNNBase):
            layers, hidden = model.num_layers, model.hidden_size
            h0 = h.reshape(n, layers, hidden).transpose(0, 1).contiguous()
            _, h_n = model(u[:, None, :] if model.batch_first else u[None, :, :], h0)
            out = h_n.transpose(0, 1).reshape(n, layers * hidden)
        else:
            out = model(u, h)
            out = out[-1] if isinstance(out, tuple) else out
    result: np.ndarray = out.detach().cpu().numpy()
    return result
