"""The engine's reference-compatible outputs on a linear map with known roots x* = 2 B u:
``unique_rule="reference"``, ``return_all_samples`` and caller ``cond_ids``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpf_client.errors import ShapeMismatch
from fpf_client.fixed_points import FixedPoints
from workers.engine import find_fixed_points
from workers.engine.models import as_step_model

torch.set_num_threads(1)
B = np.array([[1.0, -0.5], [0.25, 2.0]])


def _model():
    weight = torch.as_tensor(B, dtype=torch.float64)
    return as_step_model(lambda u, h: 0.5 * h + u @ weight, n_states=2, n_inputs=2)


def _problem():
    rng = np.random.default_rng(0)
    states = rng.normal(size=(20, 2))
    inputs = np.repeat([[0.0, 1.0], [1.0, 0.0]], 10, axis=0)
    labels = np.repeat([30, 31, 40, 41], 5)
    return states, inputs, labels


def test_all_samples_and_labels():
    states, inputs, labels = _problem()
    fps = find_fixed_points(_model(), states, inputs, dtype="float64", return_all_samples=True, cond_ids=labels)
    every = fps.all_samples
    assert every.n == 20
    np.testing.assert_allclose(every.x_init, states)
    np.testing.assert_allclose(every.xstar, 2 * inputs @ B, atol=1e-8)
    np.testing.assert_allclose(every.F_xstar, every.xstar, atol=1e-8)
    assert every.cond_id.tolist() == labels.tolist()
    assert fps.n == 2
    for point in fps:  # each point carries the label of a sample with its input
        assert point.cond_id[0] in labels[(inputs == point.inputs[0]).all(axis=1)]
    assert FixedPoints.load(fps.to_npz_bytes()) == fps
    assert FixedPoints.from_json_dict(fps.to_json_dict()) == fps
    plain = find_fixed_points(_model(), states, inputs, dtype="float64")
    assert plain.all_samples is None and sorted(set(plain.cond_id.tolist())) == [0, 1]  # input conditions


def test_the_reference_rule_keeps_unconverged_samples():
    states, inputs, _ = _problem()
    one_step = dict(method="adam", max_iters=2, dtype="float64", do_exclude_distance_outliers=False)
    assert find_fixed_points(_model(), states, inputs, **one_step).n == 0
    reference = find_fixed_points(_model(), states, inputs, unique_rule="reference", **one_step)
    assert reference.n == 20  # one Adam step leaves them far apart; the reference keeps every one
    converged = find_fixed_points(_model(), states, inputs, unique_rule="reference", dtype="float64")
    np.testing.assert_allclose(
        np.sort(converged.xstar, axis=0), np.sort(2 * np.array([[0, 1], [1, 0]]) @ B, axis=0), atol=1e-8
    )


def test_wrong_label_count_fails_before_solving():
    states, inputs, labels = _problem()
    with pytest.raises(ShapeMismatch, match="cond_ids has 19 entries"):
        find_fixed_points(_model(), states, inputs, cond_ids=labels[:19])
