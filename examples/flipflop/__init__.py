"""The 3-bit flip-flop task with trained tanh RNN, GRU and LSTM networks (Sussillo & Barak 2013).

``python -m examples.flipflop.train --out DIR`` regenerates the models shipped in ``tests/data``.
"""

from .export import export_network, load_readout
from .networks import CELLS, FlipFlopNetwork, readout_arrays, run_steps, step_module
from .task import FlipFlopTask, sign_accuracy
from .train import TrainingConfig, evaluate, train_network

__all__ = [
    "CELLS", "FlipFlopNetwork", "FlipFlopTask", "TrainingConfig", "evaluate", "export_network", "load_readout",
    "readout_arrays", "run_steps", "sign_accuracy", "step_module", "train_network",
]
