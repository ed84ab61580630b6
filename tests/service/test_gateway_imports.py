"""The gateway must start without torch, TensorFlow or the engine (they belong to the workers)."""

from __future__ import annotations

import subprocess
import sys


def test_gateway_app_does_not_import_torch_or_the_engine() -> None:
    code = (
        "import sys\n"
        "from service.gateway.app import create_app\n"
        "from service.core.settings import Settings\n"
        "create_app(Settings(redis_url='redis://127.0.0.1:1/0'))\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'workers.engine', 'workers.tasks') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
