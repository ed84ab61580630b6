"""The quick-start example of docs/client.md runs as written against the live service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fpf_client import FixedPoints

pytestmark = pytest.mark.integration

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def quick_start() -> str:
    section = DOC.read_text().split("## Quick start", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_quick_start_example_runs(live_service, tmp_path):
    script = tmp_path / "quick_start.py"  # a file: torch.jit.script reads the module's source
    script.write_text(quick_start())
    env = {**os.environ, "FPF_URL": live_service.url}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stderr
    fps = FixedPoints.load(tmp_path / "fixed_points.npz")
    assert done.stdout.startswith(f"{len(fps)} fixed point")
    assert f"{len(fps.stable)} stable, {len(fps.unstable)} unstable" in done.stdout
    assert len(fps) >= 1 and np.all(fps.qstar < 1e-12)
