"""``fpf demo`` and the flip-flop walkthrough as real subprocesses against the live service.

What the demo reports is checked independently: its saved result is read back, the stable
points' readouts (with the readouts in tests/data) must land one nearest each corner of the
memory cube, and each point must be a root of the shipped model run by torch in float64.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from examples.flipflop.export import load_readout
from fpf_client import FixedPoints

pytestmark = pytest.mark.integration

FPF = Path(sys.executable).with_name("fpf")  # the console script the client distribution installs
REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
CORNERS = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], dtype=float)
FIGURES = ("example_trial", "fixed_points", "eigenvalues")
DEMO_LIMIT_S = 120  # the demo's promise on a 2-core CPU


def _run(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {key: value for key, value in os.environ.items() if key != "FPF_URL"}
    start = time.perf_counter()
    done = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=DEMO_LIMIT_S,
        env={**env, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done, time.perf_counter() - start


def _check_memories(cell: str, result: Path) -> None:
    """Eight isolated stable roots of the shipped model, one nearest each corner through its readout."""
    fps = FixedPoints.load(result)
    stable = fps[~fps.is_nonisolated & fps.is_stable]
    assert stable.n == 8, f"{cell}: {stable.n} isolated stable points"
    weight, bias = load_readout(DATA / f"flipflop_{cell}_readout.npz")
    outputs = stable.xstar @ weight.T + bias
    nearest = np.argmin(((outputs[:, None, :] - CORNERS[None]) ** 2).sum(-1), axis=1)
    assert sorted(nearest.tolist()) == list(range(8)), f"{cell}: corners {nearest}"
    step = torch.jit.load(str(DATA / f"flipflop_{cell}.pt")).double()
    with torch.no_grad():
        xstar = torch.as_tensor(stable.xstar, dtype=torch.float64)
        residual = step(torch.zeros(8, 3, dtype=torch.float64), xstar) - xstar
    assert residual.abs().max() < 1e-5, cell


def _check_figure(path: Path, colours: dict[str, tuple[float, float, float]]) -> None:
    """A real picture: large enough, mostly but not all white, with each named colour present."""
    image = imread(path)[..., :3]
    assert image.shape[0] > 400 and image.shape[1] > 600, image.shape
    inked = np.any(image < 0.9, axis=-1)
    assert 0.02 < inked.mean() < 0.6, f"{path.name}: {inked.mean():.3f} of the pixels drawn"
    for name, rgb in colours.items():
        close = np.all(np.abs(image - np.array(rgb)) < 0.15, axis=-1)
        assert close.sum() > 50, f"{path.name}: no {name}"


@pytest.mark.parametrize("cell", ["tanh", "gru", "lstm"])
def test_demo_finds_the_eight_memories_and_draws_them(live_service, tmp_path: Path, cell: str) -> None:
    done, seconds = _run(
        [str(FPF), "demo", "--url", live_service.url, "--out", "figures", "--cell", cell, "--no-progress"], tmp_path
    )
    print(f"fpf demo --cell {cell}: {seconds:.1f} s")
    assert "8 stable, one nearest each corner of the memory cube" in done.stdout, done.stdout
    out = tmp_path / "figures"
    for figure in FIGURES:
        assert f"figures/flipflop_{cell}_{figure}.png" in done.stdout  # where the summary says they are
    _check_memories(cell, out / f"flipflop_{cell}_fixed_points.npz")
    _check_figure(out / f"flipflop_{cell}_example_trial.png", {"output": (0.12, 0.47, 0.71)})
    _check_figure(
        out / f"flipflop_{cell}_fixed_points.png",
        {"trajectories": (0.12, 0.47, 0.71), "saddles": (1, 0, 0), "stable points": (0, 0, 0)},
    )
    _check_figure(out / f"flipflop_{cell}_eigenvalues.png", {"saddle eigenvalues": (1, 0, 0)})


def test_walkthrough_analyses_the_lstm_exported_to_onnx(live_service, tmp_path: Path) -> None:
    done, seconds = _run(
        [
            sys.executable,
            "-m",
            "examples.flipflop.walkthrough",
            "--cell",
            "lstm",
            "--format",
            "onnx",
            "--url",
            live_service.url,
            "--out",
            str(tmp_path),
        ],
        REPO,
    )
    print(f"walkthrough lstm onnx: {seconds:.1f} s")
    assert "16-unit LSTM (onnx)" in done.stdout
    assert "8 stable, one nearest each corner of the memory cube" in done.stdout, done.stdout
    assert (tmp_path / "flipflop_lstm.onnx").stat().st_size > 1000
    _check_memories("lstm", tmp_path / "flipflop_lstm_onnx_fixed_points.npz")


#: Runs ``fpf`` from a wheel on sys.path (argv[1]) with torch blocked, as after ``pip install ./client``.
FROM_WHEEL = textwrap.dedent("""
    import sys

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked: the client must not need it")

    sys.meta_path.insert(0, BlockTorch())
    wheel = sys.argv[1]
    sys.path.insert(0, wheel)
    import fpf_client
    assert fpf_client.__file__.startswith(wheel), fpf_client.__file__
    from fpf_client.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_demo_runs_from_the_client_wheel_without_torch(live_service, tmp_path: Path) -> None:
    """The installed client alone (models and recordings as package data) runs the demo."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            str(REPO / "client"),
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    wheel = next(tmp_path.glob("fpf_client-*.whl"))
    done, _ = _run(
        [
            sys.executable,
            "-c",
            FROM_WHEEL,
            str(wheel),
            "demo",
            "--url",
            live_service.url,
            "--out",
            "out",
            "--cell",
            "gru",
            "--no-progress",
        ],
        tmp_path,
    )
    assert "8 stable, one nearest each corner of the memory cube" in done.stdout, done.stdout
    _check_memories("gru", tmp_path / "out" / "flipflop_gru_fixed_points.npz")
