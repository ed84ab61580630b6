"""The gRPC stubs are generated when fpf-client is built, describe the shipped .proto, and load beside TensorFlow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from fpf_client.rpc.stubs import PROTO_FILE, load, proto_root

CLIENT = Path(__file__).resolve().parents[2] / "client"
GENERATED = {"__init__.py", "fixedpoints_pb2.py", "fixedpoints_pb2.pyi", "fixedpoints_pb2_grpc.py"}


def test_a_wheel_built_from_the_client_ships_the_stubs(tmp_path: Path) -> None:
    source = tmp_path / "client"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("_generated", "build", "*.egg-info", "__pycache__"))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("fpf_client-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {Path(n).name for n in names if n.startswith("fpf_client/rpc/_generated/")} == GENERATED
    assert not (source / "fpf_client" / "rpc" / "_generated").exists(), "a wheel build must not write into the source"


def test_the_installed_stubs_describe_the_shipped_proto(tmp_path: Path) -> None:
    grpc_tools = pytest.importorskip("grpc_tools")
    descriptor_set = tmp_path / "fixedpoints.pb"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{proto_root()}",
            f"-I{Path(grpc_tools.__file__).parent / '_proto'}",
            f"--descriptor_set_out={descriptor_set}",
            PROTO_FILE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (expected,) = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    _clear_json_names(expected.message_type)  # protoc fills them in descriptor sets, not in generated code
    installed = descriptor_pb2.FileDescriptorProto.FromString(load().pb2.DESCRIPTOR.serialized_pb)
    assert installed == expected, "the stubs are stale: rebuild fpf-client (make setup) after changing the .proto"


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


LOAD_AFTER_TENSORFLOW = """
import tensorflow  # its own protobuf runtime is loaded first
from fpf_client.rpc.stubs import load
stubs = load()
print(stubs.pb2.DESCRIPTOR.name, sorted(stubs.pb2.DESCRIPTOR.services_by_name))
"""


def test_stubs_load_in_a_process_that_imported_tensorflow() -> None:
    pytest.importorskip("tensorflow")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AFTER_TENSORFLOW], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["fpf/v1/fixedpoints.proto", "['FixedPointService']"]
