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
        from fpf_client.compat import FixedPointFinder, FixedPoints, plot_fps
        FixedPointFinder("a-model-id", url="http://127.0.0.1:9")  # a service named: no torch, no engine
        from fpf_client.payloads import is_local_model
        assert not is_local_model("no-such-file")
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_compat_without_service_or_engine_says_how_to_get_either():
    script = textwrap.dedent(
        """
        import os, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name in ("torch", "workers") or name.startswith(("torch.", "workers.")):
                    raise ImportError(f"{name} is blocked in this test")
                return None

        sys.meta_path.insert(0, Block())
        os.environ.pop("FPF_URL", None)
        from fpf_client.compat import FixedPointFinder
        try:
            FixedPointFinder("a-model-id")
        except RuntimeError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "url=" in done.stdout and "FPF_URL" in done.stdout and "fpf-server up" in done.stdout
    assert "pip install 'fpf[worker]'" in done.stdout
