"""The export recipe in docs/model-contract.md runs as written and gives a file fpf accepts."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest
import torch

from workers.engine.models import load_model

DOC = Path(__file__).resolve().parents[3] / "docs" / "model-contract.md"


def _python_blocks(text: str, section: str) -> list[str]:
    """The python code blocks of the ``## {section}`` part of a markdown text."""
    part = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", part, flags=re.DOTALL)


def test_export_recipe_runs_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    blocks = _python_blocks(DOC.read_text(), "Recipe: export a step module")
    assert len(blocks) == 1, "the TorchScript recipe should be one block: the code this test runs"
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "recipe.py"  # a real file: torch.jit.script reads the class's source
    script.write_text(blocks[0])
    namespace = runpy.run_path(str(script), run_name="recipe")

    model = load_model(tmp_path / "rate_rnn.pt")
    assert model.describe() == {"format": "torchscript", "n_states": 16, "n_inputs": 3, "dynamics": "discrete"}
    net = namespace["net"]
    u, h = torch.randn(4, 3), torch.randn(4, 16)
    torch.testing.assert_close(model.step(h, u), net(u, h))
