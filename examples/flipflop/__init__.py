"""The 3-bit flip-flop task with trained tanh RNN, GRU and LSTM networks (Sussillo & Barak 2013).

``python -m examples.flipflop.train --out DIR`` regenerates the models shipped in ``tests/data``;
``python -m examples.flipflop.walkthrough`` exports one (TorchScript, ONNX or SavedModel) and
analyses it through a running fpf (docs/walkthrough.md).
"""

from .export import FORMATS, export_network, export_onnx, export_step, load_readout
from .networks import CELLS, FlipFlopNetwork, cell_weights, readout_arrays, run_steps, step_from_weights, step_module
from .task import FlipFlopTask, sign_accuracy
from .train import TrainingConfig, evaluate, train_network

__all__ = [
    "CELLS", "FORMATS", "FlipFlopNetwork", "FlipFlopTask", "TrainingConfig", "cell_weights", "evaluate",
    "export_network", "export_onnx", "export_step", "load_readout", "readout_arrays", "run_steps",
    "sign_accuracy", "step_from_weights", "step_module", "train_network",
]
