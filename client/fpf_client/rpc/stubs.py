"""Python stubs of ``fpf/v1/fixedpoints.proto``, generated when fpf-client is built.

The ``.proto`` ships inside this package (``fpf_client/proto``; the repository's ``proto/`` links
to it). Building the package (a wheel, or ``pip install -e``) runs protoc on it and writes
``fpf_client.rpc._generated`` (see ``client/build_stubs.py``); nothing is generated at run time
and nothing generated is committed.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import ModuleType

#: The proto's path below its include root, which also names it in the descriptor pool.
PROTO_FILE = "fpf/v1/fixedpoints.proto"
SERVICE_NAME = "fpf.v1.FixedPointService"
GENERATED = "fpf_client.rpc._generated"


@dataclass(frozen=True)
class Stubs:
    """The generated modules: messages (``pb2``) and the service's stub and servicer (``pb2_grpc``)."""

    pb2: ModuleType
    pb2_grpc: ModuleType


def proto_root() -> Path:
    """The include root that holds :data:`PROTO_FILE`."""
    return Path(str(resources.files("fpf_client") / "proto"))


@functools.lru_cache(maxsize=1)
def load() -> Stubs:
    """The generated stubs, imported once per process.

    Raises
    ------
    ImportError
        When this installation of fpf-client was built without them (an old editable install:
        reinstall with ``pip install -e ./client`` or ``make setup``).
    """
    try:
        pb2 = importlib.import_module(f"{GENERATED}.fixedpoints_pb2")
        pb2_grpc = importlib.import_module(f"{GENERATED}.fixedpoints_pb2_grpc")
    except ModuleNotFoundError as missing:
        raise ImportError(
            "fpf-client's gRPC stubs are missing: they are generated when the package is built; "
            "reinstall it (pip install './client[grpc]', or make setup in a checkout)"
        ) from missing
    return Stubs(pb2=pb2, pb2_grpc=pb2_grpc)
