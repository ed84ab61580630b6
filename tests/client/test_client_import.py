"""fpf-client is the torch-free distribution: importing all of it must not need torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_client_imports_with_torch_blocked():
    script = textwrap.dedent(
        """
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        import fpf_client
        from fpf_client import AsyncClient, Client, FixedPoints, Job
        import fpf_client.cli, fpf_client.plotting
        from fpf_client.payloads import is_local_model
        assert not is_local_model("no-such-file")
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
