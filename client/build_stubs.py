"""Build step of fpf-client: generate the gRPC stubs from the shipped ``.proto``.

``build_py`` runs protoc (from grpcio-tools, a build requirement) on
``fpf_client/proto/fpf/v1/fixedpoints.proto`` and writes the modules into
``fpf_client/rpc/_generated/``: into the build directory for a wheel, and in place for an
editable install, as setuptools asks of build steps that generate files (PEP 660). Nothing
generated is committed, and nothing is generated at run time.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from setuptools.command.build_py import build_py

PROTO_FILE = "fpf/v1/fixedpoints.proto"
GENERATED_PACKAGE = Path("fpf_client", "rpc", "_generated")


def generate_stubs(proto_root: Path, out_dir: Path) -> None:
    """Write ``fixedpoints_pb2.py``, its ``.pyi`` and ``fixedpoints_pb2_grpc.py`` into ``out_dir``.

    protoc names the service module's import of the messages after the proto's path
    (``from fpf.v1 import fixedpoints_pb2``); it is rewritten to a relative import so the
    stubs live inside ``fpf_client`` rather than as a top-level ``fpf`` package.
    """
    from grpc_tools import protoc

    staging = out_dir / "_protoc"
    staging.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={staging}",
            f"--pyi_out={staging}",
            f"--grpc_python_out={staging}",
            str(proto_root / PROTO_FILE),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {proto_root / PROTO_FILE}")
    generated = staging / Path(PROTO_FILE).parent
    for name in ("fixedpoints_pb2.py", "fixedpoints_pb2.pyi", "fixedpoints_pb2_grpc.py"):
        text = (generated / name).read_text()
        text = text.replace("from fpf.v1 import fixedpoints_pb2 as", "from . import fixedpoints_pb2 as")
        (out_dir / name).write_text(text)
        (generated / name).unlink()
    (out_dir / "__init__.py").write_text('"""gRPC stubs generated from fpf/v1/fixedpoints.proto at build time."""\n')
    for folder in sorted(staging.rglob("*"), reverse=True):
        folder.rmdir()
    staging.rmdir()


class BuildPyWithStubs(build_py):
    """``build_py`` that also generates the gRPC stubs (in place for editable installs)."""

    def run(self) -> None:
        super().run()
        source_root = Path(__file__).resolve().parent
        target_root = source_root if self.editable_mode else Path(self.build_lib)
        generate_stubs(source_root / "fpf_client" / "proto", target_root / GENERATED_PACKAGE)
