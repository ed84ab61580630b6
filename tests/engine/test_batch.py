"""find_fixed_points_batch against separate find_fixed_points calls on the same requests.

The batch shares one solver pass, so for every method its results must be those of the
requests searched alone: the same points, counts, labels and analysis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Tanh, grid, roll_weights, same_set, true_roots

from fpf_client.options import FinderOptions
from workers.engine import SearchRequest, batchable, find_fixed_points, find_fixed_points_batch

#: info entries that describe the batch's run rather than the request's result.
RUN_ENTRIES = {"wall_time_s", "iterations"}


def assert_same(batched, alone, atol: float) -> None:
    """The same result, up to rounding of the solver's batched arithmetic."""
    assert batched.n == alone.n
    np.testing.assert_allclose(batched.xstar, alone.xstar, rtol=0, atol=atol)
    np.testing.assert_allclose(batched.inputs, alone.inputs, rtol=0, atol=0)
    np.testing.assert_array_equal(batched.cond_id, alone.cond_id)
    if alone.is_stable is not None:
        np.testing.assert_array_equal(batched.is_stable, alone.is_stable)
        np.testing.assert_allclose(batched.eigval_J_xstar, alone.eigval_J_xstar, rtol=0, atol=100 * atol)
    assert batched.info.keys() == alone.info.keys()
    for key in alone.info.keys() - RUN_ENTRIES:
        assert batched.info[key] == alone.info[key], key


def roll_requests(dtype=np.float64) -> list[SearchRequest]:
    """Three requests of different sizes from the 3^4 grid, on the 4-state roll network."""
    starts = grid(4).astype(dtype)
    return [
        SearchRequest(starts[:7]),
        SearchRequest(starts[7:50], cond_ids=np.arange(100, 143)),
        SearchRequest(starts[50:]),
    ]


def separately(model, requests, **options):
    return [find_fixed_points(model, r.initial_states, r.inputs, cond_ids=r.cond_ids, **options) for r in requests]


@pytest.mark.parametrize(
    "method, dtype, atol",
    [
        ("lm", "float64", 1e-10),
        ("lm", "float32", 1e-6),
        ("auto", "float64", 1e-10),  # lm with restarts, which finish the states the shared mixing leaves
        ("newton_krylov", "float64", 1e-10),
        ("adam", "float32", 1e-6),
    ],
)
def test_the_batch_equals_separate_searches_on_the_roll_network(method, dtype, atol):
    model = Tanh(roll_weights(4))
    requests = roll_requests(np.float32 if dtype == "float32" else np.float64)
    options = {"method": method, "dtype": dtype, "device": "cpu"}
    batched = find_fixed_points_batch(model, requests, **options)
    alone = separately(model, requests, **options)
    assert len(batched) == len(requests)
    for b, a in zip(batched, alone, strict=True):
        assert_same(b, a, atol)
    if method != "adam":  # the roots (adam stops at q < tol_q, far from float64's accuracy)
        truth = true_roots(roll_weights(4))
        found = np.concatenate([b.xstar for b in batched])
        assert all(np.abs(truth - x).max(axis=1).min() < 1e-4 for x in found)
        assert same_set(np.unique(found.round(4), axis=0), truth, tol=1e-3)


def test_requests_of_different_inputs_keep_their_own_inputs_and_conditions():
    rng = np.random.default_rng(3)
    W = roll_weights(3)
    model = Tanh(W, B=rng.standard_normal((2, 3)) * 0.3)
    starts = grid(3)
    requests = [
        SearchRequest(starts[:10], inputs=np.array([[0.2, -0.1]])),
        SearchRequest(starts[10:22], inputs=np.repeat(np.array([[0.0, 0.0], [0.3, 0.1]]), 6, axis=0)),
        SearchRequest(starts[22:], inputs=np.array([[-0.2, 0.4]]), cond_ids=np.full(5, 7)),
    ]
    options = {"method": "lm", "dtype": "float64", "device": "cpu", "batch_size": 4}  # chunks mix the requests
    batched = find_fixed_points_batch(model, requests, **options)
    for b, a, r in zip(batched, separately(model, requests, **options), requests, strict=True):
        assert_same(b, a, 1e-10)
        assert set(map(tuple, b.inputs)) <= set(map(tuple, np.asarray(r.inputs)))
        # each point is a root of its own input's map, by the float64 residual
        residual = np.tanh(b.xstar @ W + b.inputs @ model.B.numpy()) - b.xstar
        assert np.abs(residual).max() < 1e-10
    assert set(batched[1].cond_id) == {0, 1} and set(batched[2].cond_id) == {7}


def test_anderson_batch_equals_separate_searches_on_a_contracting_network():
    rng = np.random.default_rng(0)
    d = 16
    W = rng.standard_normal((d, d)) * 0.5 / np.sqrt(d)
    model = Tanh(W, b=rng.standard_normal(d) * 0.5)
    starts = rng.uniform(-1, 1, size=(30, d))
    requests = [SearchRequest(starts[:4]), SearchRequest(starts[4:25]), SearchRequest(starts[25:])]
    options = {"method": "anderson", "dtype": "float64", "device": "cpu"}
    batched = find_fixed_points_batch(model, requests, **options)
    for b, a in zip(batched, separately(model, requests, **options), strict=True):
        assert_same(b, a, 1e-10)
        assert b.n == 1  # a contraction has one root
        assert np.abs(np.tanh(b.xstar @ W + model.b.numpy()) - b.xstar).max() < 1e-10


def test_lm_krylov_batch_equals_separate_searches_on_a_large_network():
    rng = np.random.default_rng(1)
    d = 64
    W = rng.standard_normal((d, d)) * 1.2 / np.sqrt(d)
    model = Tanh(W)
    starts = rng.uniform(-1, 1, size=(14, d)).astype(np.float32)
    requests = [SearchRequest(starts[:3]), SearchRequest(starts[3:12]), SearchRequest(starts[12:])]
    options = {"dtype": "float32", "device": "cpu"}  # auto: lm_krylov from 64 states on
    batched = find_fixed_points_batch(model, requests, **options)
    for b, a in zip(batched, separately(model, requests, **options), strict=True):
        assert b.info["method"] == "lm_krylov"
        assert_same(b, a, 1e-6)
        assert b.n >= 1


def test_all_samples_are_each_requests_own():
    model = Tanh(roll_weights(4))
    requests = roll_requests()
    options = {"dtype": "float64", "device": "cpu", "return_all_samples": True}
    batched = find_fixed_points_batch(model, requests, **options)
    for b, a, r in zip(batched, separately(model, requests, **options), requests, strict=True):
        assert_same(b, a, 1e-10)
        assert b.all_samples.n == len(r.initial_states)
        np.testing.assert_array_equal(b.all_samples.x_init, r.initial_states)
        np.testing.assert_allclose(b.all_samples.xstar, a.all_samples.xstar, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(b.all_samples.cond_id, a.all_samples.cond_id)


def test_a_time_limit_covers_the_whole_batch():
    model = Tanh(roll_weights(4))
    requests = roll_requests()
    options = {"method": "lm", "dtype": "float64", "device": "cpu", "time_limit_s": 0}
    reports: list[dict] = []
    batched = find_fixed_points_batch(model, requests, progress=reports.append, **options)
    for b, a in zip(batched, separately(model, requests, **options), strict=True):
        assert b.info["partial"] and b.info["partial_reason"]
        assert_same(b, a, 1e-10)
    assert reports and all(report["n_total"] == len(grid(4)) for report in reports)


def test_batchable_names_the_methods_whose_samples_are_independent():
    assert batchable(FinderOptions(method="lm")) and batchable(FinderOptions(method="newton_krylov"))
    assert batchable(FinderOptions(method="anderson"))
    assert not batchable(FinderOptions(method="adam")) and not batchable(FinderOptions(method="lm_krylov"))
    assert batchable(FinderOptions(), n_states=16) and not batchable(FinderOptions(), n_states=64)
    assert not batchable(FinderOptions())  # auto, without the network's size


def test_a_batch_of_one_is_find_fixed_points():
    model = Tanh(roll_weights(3))
    (batched,) = find_fixed_points_batch(model, [SearchRequest(torch.as_tensor(grid(3)))], dtype="float64")
    assert_same(batched, find_fixed_points(model, grid(3), dtype="float64"), 0.0)
