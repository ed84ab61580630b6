"""The engine names the devices it can use, and a job for a device it lacks fails with device_unavailable
(before, torch's "AssertionError: Torch not compiled with CUDA enabled" surfaced as ``internal``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_solvers import Tanh, roll_weights

from fpf_client.errors import DeviceUnavailable, ErrorCode
from workers.engine import find_fixed_points
from workers.engine.devices import available_devices, resolve_device


def test_the_devices_on_offer_follow_torch() -> None:
    assert available_devices() == (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_search_on_cuda_without_cuda_is_device_unavailable() -> None:
    with pytest.raises(DeviceUnavailable) as caught:
        find_fixed_points(Tanh(roll_weights(2)), np.array([[0.9, -0.9]]), method="auto", device="cuda")
    error = caught.value
    assert error.code is ErrorCode.DEVICE_UNAVAILABLE and error.status == 422
    assert error.extra == {"device": "cuda", "devices": ["cpu"]}
    assert "this worker has none" in error.detail
