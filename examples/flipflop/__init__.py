"""The 3-bit flip-flop task with trained tanh RNN, GRU and LSTM networks (Sussillo & Barak 2013).

Modules: ``task`` (trial generator), ``networks`` (the networks and their step maps), ``train``
(``python -m examples.flipflop.train --out DIR`` regenerates the models shipped in ``tests/data``),
``export`` (TorchScript, ONNX, SavedModel), ``recording`` (the trials ``fpf demo`` ships) and
``walkthrough`` (export one network and analyse it through a running fpf; docs/walkthrough.md).
Nothing is imported here, so ``python -m examples.flipflop.<module>`` runs each module once.
"""
