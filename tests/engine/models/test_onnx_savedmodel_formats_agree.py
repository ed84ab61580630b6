"""The same networks as TorchScript, ONNX (both exporters; step graphs and recurrent ops) and SavedModel
give the same fixed points, Jacobians and eigenvalues (float32, within 1e-5).

The reference is the torch module itself, wrapped by ``as_step_model``; every export
is loaded through its format's loader and solved by the same ``find_fixed_points``.
"""

from __future__ import annotations

from pathlib import Path

import export_nets as nets
import numpy as np
import pytest
import torch

from workers.engine import as_step_model, find_fixed_points
from workers.engine.models.onnx_model import load_onnx
from workers.engine.models.torchscript import load_torchscript

pytestmark = pytest.mark.slow

torch.set_num_threads(1)
TOL = 1e-5


def _exports(kind: str, root: Path, shared: nets.SharedExports) -> dict[str, object]:
    from workers.engine.models.savedmodel import load_savedmodel

    dyn = nets.dynamics(kind)
    script = root / f"{kind}.pt"
    torch.jit.save(torch.jit.script(nets.Cell(kind, nets.weights(kind))), str(script))
    models = {
        "torchscript": load_torchscript(script, dynamics=dyn, n_states=nets.n_states(kind), n_inputs=nets.N_INPUTS),
        "savedmodel": load_savedmodel(shared.savedmodel(kind), dynamics=dyn),
    }
    for form in ("cell",) if kind == "rate" else ("cell", "layer"):
        for exporter in ("legacy", "dynamo"):
            models[f"onnx-{form}-{exporter}"] = load_onnx(shared.onnx(kind, form, exporter), dynamics=dyn)
    return models


def _sorted_eigenvalues(values: np.ndarray) -> np.ndarray:
    return values[np.lexsort((values.imag.round(4), values.real.round(4)))]


@pytest.mark.parametrize("kind", nets.KINDS)
def test_formats_agree(kind: str, tmp_path: Path, shared_exports: nets.SharedExports) -> None:
    initial = np.random.default_rng(0).normal(0, 0.5, (48, nets.n_states(kind))).astype(np.float32)
    inputs = np.zeros((1, nets.N_INPUTS), np.float32)
    options = {"method": "auto", "device": "cpu", "dtype": "float32"}
    reference = find_fixed_points(
        as_step_model(
            nets.Cell(kind, nets.weights(kind)),
            dynamics=nets.dynamics(kind),
            n_states=nets.n_states(kind),
            n_inputs=nets.N_INPUTS,
        ),
        initial,
        inputs,
        **options,
    )
    assert reference.n >= 1 and not reference.is_nonisolated.any()
    for name, model in _exports(kind, tmp_path, shared_exports).items():
        found = find_fixed_points(model, initial, inputs, **options)
        assert found.n == reference.n, f"{name}: {found.n} fixed points, torch has {reference.n}"
        match = [int(np.argmin(np.abs(found.xstar - x).max(axis=1))) for x in reference.xstar]
        assert sorted(match) == list(range(found.n)), f"{name}: fixed points do not pair up"
        np.testing.assert_allclose(found.xstar[match], reference.xstar, atol=TOL, err_msg=name)
        np.testing.assert_allclose(found.J_xstar[match], reference.J_xstar, atol=TOL, err_msg=name)
        np.testing.assert_allclose(found.dFdu[match], reference.dFdu, atol=TOL, err_msg=name)
        for got, want in zip(found.eigval_J_xstar[match], reference.eigval_J_xstar):
            np.testing.assert_allclose(_sorted_eigenvalues(got), _sorted_eigenvalues(want), atol=TOL, err_msg=name)
        np.testing.assert_array_equal(found.is_stable[match], reference.is_stable, err_msg=name)
