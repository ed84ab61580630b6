"""fpf_client.compat against a live service: the reference's flip-flop analysis, labels over REST.

The service must give what the in-process engine gives for the same script (the engine is the
same code; only transport differs), and bad labels get the contract's problem document.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from service_harness import LiveService

from fpf_client.compat import FixedPointFinder

pytestmark = pytest.mark.integration
torch = pytest.importorskip("torch")
DATA = Path(__file__).resolve().parents[1] / "data"


def _flipflop_rnn() -> torch.nn.RNN:
    cell = torch.jit.load(str(DATA / "flipflop_tanh.pt"))
    rnn = torch.nn.RNN(3, 16, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(rnn, f"{name}_l0").copy_(getattr(cell, name))
    return rnn


def test_the_reference_script_runs_on_a_service_as_in_process(
    live_service: LiveService, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnn = _flipflop_rnn()
    hps = {"max_iters": 10000, "lr_init": 1.0, "outlier_distance_scale": 10.0, "verbose": False}
    monkeypatch.setenv("FPF_URL", live_service.url)  # the two-line move: set FPF_URL, change the import
    remote = FixedPointFinder(rnn, **hps)
    assert remote.backend.where == live_service.url
    states = remote.sample_states(np.random.default_rng(0).normal(size=(8, 20, 16)) * 0.8, 256, noise_scale=0.3)
    labels = np.arange(256) // 64
    unique, all_fps = remote.find_fixed_points(states, np.zeros([1, 3]), cond_ids=labels)
    monkeypatch.delenv("FPF_URL")
    local_unique, _ = FixedPointFinder(rnn, **hps).find_fixed_points(states, np.zeros([1, 3]), cond_ids=labels)
    assert unique.n == local_unique.n and unique.is_stable.sum() == local_unique.is_stable.sum()
    distance = np.linalg.norm(unique.xstar[:, None] - local_unique.xstar[None], axis=2)
    assert distance.min(axis=1).max() < 1e-5
    assert all_fps.n == 256 and all_fps.cond_id.tolist() == labels.tolist()
    np.testing.assert_array_equal(np.sort(unique.cond_id), np.sort(local_unique.cond_id))


def test_bad_labels_are_refused_with_the_contracts_codes(live_service: LiveService, tanh_model: dict) -> None:
    states = [[0.0] * 8] * 3
    cases = [([1, 2], "shape_mismatch"), ([1, 2, 2.5], "invalid_array"), ([1, 2, 10**30], "invalid_array")]
    with live_service.client() as http:
        for labels, code in cases:
            body = {"model_id": tanh_model["id"], "initial_states": states, "cond_ids": labels}
            response = http.post("/v1/jobs", json=body)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == code and response.json()["field"].startswith("cond_ids")
