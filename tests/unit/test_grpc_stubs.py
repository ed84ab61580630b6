"""The gRPC stubs are generated on first use, also in a process that has imported TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tensorflow")

GENERATE_AFTER_TENSORFLOW = """
import tensorflow  # its protobuf runtime clashes with grpcio-tools' when protoc runs in-process
from fpf_client.rpc.stubs import load
stubs = load()
print(stubs.pb2.DESCRIPTOR.name, sorted(stubs.pb2.DESCRIPTOR.services_by_name))
"""


def test_stubs_generate_in_a_process_that_imported_tensorflow(tmp_path: Path) -> None:
    env = {**os.environ, "FPF_GRPC_STUBS_DIR": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", GENERATE_AFTER_TENSORFLOW], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fpf/v1/fixedpoints.proto", "['FixedPointService']"]
    assert list(tmp_path.glob("*/fpf/v1/fixedpoints_pb2_grpc.py"))
