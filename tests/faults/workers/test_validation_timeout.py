"""A model whose forward never returns: its validation is stopped at FPF_VALIDATION_TIME_LIMIT_S, tried
once more, and the model is invalid with ``validation_timeout``; the worker is free for other work."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest
from service_harness import LiveService, random_states, start_service

from fpf_client import Client
from fpf_client.errors import InvalidModel, ValidationTimeout
from workers.sandbox import Limits, RequestTimedOut, Sandbox

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def never_returns(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6 KB TorchScript step whose loop never ends (tanh keeps the states finite)."""
    import torch

    class NeverReturns(torch.nn.Module):
        def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            x = h + 0.0 * u.sum(-1, keepdim=True)
            while bool(torch.isfinite(x).all()):
                x = torch.tanh(x)
            return x

    path = tmp_path_factory.mktemp("never") / "never_returns.pt"
    torch.jit.script(NeverReturns()).save(str(path))
    return path


def test_a_sandboxed_load_past_its_time_limit_is_stopped_and_its_child_killed(
    never_returns: Path, tmp_path: Path
) -> None:
    data = never_returns.read_bytes()
    record = {
        "id": hashlib.sha256(data).hexdigest(),
        "format": "torchscript",
        "n_states": 8,
        "n_inputs": 2,
        "dynamics": "discrete",
    }
    sandbox = Sandbox(Limits(memory_bytes=2 << 30, cpu_s=600, disk_bytes=64 << 20), data_dir=tmp_path / "data")
    try:
        sandbox.wait_ready()  # the limit counts from here: start-up is not the model's time
        start = time.monotonic()
        with pytest.raises(RequestTimedOut):
            sandbox.describe(record, lambda: data, time_limit_s=1.0)
        assert time.monotonic() - start < 30
        assert not sandbox.alive
    finally:
        sandbox.kill()


def test_a_model_that_never_returns_is_invalid_with_validation_timeout(
    fault_service: LiveService, fault_model: dict[str, Any], never_returns: Path
) -> None:
    model = fault_service.upload_model(never_returns, timeout_s=180, n_states=8, n_inputs=2)
    assert model["status"] == "invalid", model
    error = model["error"]
    assert error["code"] == "validation_timeout" and error["attempts"] == 2, error
    assert (
        error["limit"] == float(fault_service.env["FPF_VALIDATION_TIME_LIMIT_S"])
        and "SoftTimeLimitExceeded" not in error["detail"]
    )
    assert "FPF_VALIDATION_TIME_LIMIT_S" in error["detail"]

    with Client(fault_service.url) as client:
        with pytest.raises(ValidationTimeout) as caught:
            client.upload_model(never_returns, n_states=8, n_inputs=2)  # the same bytes: validated again
        assert isinstance(caught.value, InvalidModel)
        # The worker was freed: a job of another model runs at once.
        fps = client.find_fixed_points(fault_model["id"], random_states(16), [[0.0, 0.0]], progress=False, timeout=120)
    assert fps.n >= 1


def test_an_unsandboxed_validation_stuck_in_native_code_is_settled_after_its_pool_process_is_killed(
    never_returns: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """With ``FPF_SANDBOX=off`` the TorchScript loop never returns to Python, so Celery's soft limit cannot
    stop it: Celery kills the pool process, and the worker's main process settles the model."""
    settings = {"FPF_SANDBOX": "off", "FPF_VALIDATION_TIME_LIMIT_S": "2", "FPF_KILL_GRACE_S": "2"}
    with start_service(tmp_path_factory.mktemp("unsandboxed-validation"), **settings) as unsandboxed:
        model = unsandboxed.upload_model(never_returns, timeout_s=180, n_states=8, n_inputs=2)
    error = model["error"]
    assert model["status"] == "invalid" and error["code"] == "validation_timeout", model
    assert error["attempts"] == 2 and "SoftTimeLimitExceeded" not in error["detail"]
