"""The ``fpf`` command, run as a real subprocess against the live service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fpf_client import Client, FixedPoints

pytestmark = pytest.mark.integration

FPF = Path(sys.executable).with_name("fpf")  # the console script the distribution installs


class Linear(torch.nn.Module):
    """h_next = 0.5 h + u: one stable fixed point, x* = 2u, known exactly."""

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return 0.5 * h + u


@pytest.fixture
def fpf(live_service, tmp_path):
    env = {**os.environ, "FPF_URL": live_service.url}

    def run(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
        done = subprocess.run([str(FPF), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180)
        assert done.returncode == expect, done.stderr
        return done

    return run


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    model = tmp_path / "linear.pt"
    torch.jit.save(torch.jit.script(Linear()), str(model))
    np.save(tmp_path / "states.npy", np.random.default_rng(0).normal(size=(16, 3)))
    np.save(tmp_path / "inputs.npy", np.array([[0.1, -0.2, 0.3]]))
    return {"model": model, "states": tmp_path / "states.npy", "inputs": tmp_path / "inputs.npy", "dir": tmp_path}


def test_upload_run_status_result_models_jobs(fpf, files, live_service):
    uploaded = fpf("upload", str(files["model"]), "--n-states", "3", "--n-inputs", "3").stdout
    model_id, status = uploaded.split("\t")[:2]
    assert status == "ready" and len(model_id) == 64

    done = fpf(
        "run",
        model_id,
        "--states",
        str(files["states"]),
        "--inputs",
        str(files["inputs"]),
        "--option",
        "dtype=float64",
        "--option",
        "tol_unique=1e-6",
        "-o",
        "result.json",
    )
    assert done.stdout.startswith("1 fixed point in 3 dimensions (discrete)")
    assert "1 stable, 0 unstable" in done.stdout
    job_id = done.stderr.split()[1]
    fps = FixedPoints.from_json_dict(json.loads((files["dir"] / "result.json").read_text()))
    np.testing.assert_allclose(fps.xstar, [[0.2, -0.4, 0.6]], atol=1e-12)  # x* = 2u
    np.testing.assert_allclose(fps.J_xstar, [0.5 * np.eye(3)], atol=1e-12)

    assert fpf("status", job_id).stdout.startswith(f"job {job_id}: succeeded")
    fpf("result", job_id, "-o", "again.npz")
    assert FixedPoints.load(files["dir"] / "again.npz") == fps
    with Client(live_service.url) as client:
        assert client.get_job(job_id).result() == fps
    assert model_id in fpf("models").stdout
    assert job_id in fpf("jobs", "--status", "succeeded").stdout


def test_run_uploads_a_model_file_itself(fpf, files):
    done = fpf("run", str(files["model"]), "--states", str(files["states"]), "--no-progress", "-o", "out.npz")
    np.testing.assert_allclose(FixedPoints.load(files["dir"] / "out.npz").xstar, np.zeros((1, 3)), atol=1e-6)
    assert "1 fixed point" in done.stdout


def test_errors_are_one_line_with_their_code(fpf, files):
    missing = fpf("status", "no-such-job", expect=1)
    assert missing.stderr.startswith("fpf: error [job_not_found]") and missing.stderr.count("\n") == 1
    shape = fpf(
        "run",
        str(files["model"]),
        "--states",
        str(files["states"]),
        "--inputs",
        str(files["inputs"]),
        "--option",
        "tol_qq=1",
        expect=1,
    )
    assert shape.stderr.strip() == "fpf: error [invalid_options] unknown option 'tol_qq'"
    bad = files["dir"] / "bad.pt"
    bad.write_bytes(b"not a model")
    assert fpf("upload", str(bad), expect=1).stderr.startswith("fpf: error [invalid_model]")
