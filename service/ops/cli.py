"""``fpf-server``: run the fpf service, whole (``up``) or part by part (``gateway``, ``grpc``, ``worker``).

``up`` is the one-command default for a laptop or a single server; ``gateway``, ``grpc`` and
``worker`` are what docker-compose (or systemd, or a cluster) runs, one process each.
Settings come from ``FPF_*`` environment variables (:mod:`service.core.settings`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from service.core.settings import get_settings
from service.ops.api_keys_cli import add_keys_command, keys_file

GATEWAY_APP = "service.gateway.app:create_app"
CELERY_APP = "workers.celery_app:app"


def celery_worker_argv(queue: str, name: str, loglevel: str = "info") -> list[str]:
    """The Celery worker command line: one prefork process per worker, task events on for Flower.

    Concurrency is 1 because a worker owns one accelerator and the engine batches internally.
    """
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "worker",
        "-Q",
        queue,
        "--pool",
        "prefork",
        "--concurrency",
        "1",
        "-E",
        "-n",
        f"{name}@%h",
        "--loglevel",
        loglevel,
    ]


def bind_allowed(host: str, keys_file: Path) -> bool:
    """Whether the API may listen on ``host``: beyond loopback only once an API key exists (logged either way)."""
    from service.core.api_keys import KeyStore
    from service.gateway.auth import UnsafeBind, check_bind

    try:
        check_bind(host, KeyStore(keys_file))
    except UnsafeBind as exc:
        logging.getLogger("fpf-server").error("%s", exc)
        return False
    return True


def run_gateway(host: str, port: int, log_level: str) -> int:
    """Serve the gateway with uvicorn in this process until it is stopped."""
    import uvicorn

    from service.ops.launcher import port_is_free

    if not bind_allowed(host, get_settings().keys_file):
        return 1
    if not port_is_free(host, port):
        logging.getLogger("fpf-server").error("port %d on %s is in use; choose another with --port", port, host)
        return 1
    uvicorn.run(GATEWAY_APP, factory=True, host=host, port=port, log_level=log_level)
    return 0


def run_grpc(host: str, port: int, threads: int) -> int:
    """Serve the gRPC API in this process until it is stopped."""
    from service.grpc.server import serve

    return serve(host, port, threads=threads)


def exec_worker(gpu: int | None, name: str | None, loglevel: str) -> NoReturn:
    """Replace this process with a Celery worker, pinned to one GPU when ``gpu`` is given.

    CUDA_VISIBLE_DEVICES is set before the worker (and so torch) starts; nothing here touches CUDA.
    """
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    node = name or (f"gpu{gpu}" if gpu is not None else "worker")
    argv = celery_worker_argv(get_settings().queue, node, loglevel)
    os.execv(argv[0], argv)


def run_up(args: argparse.Namespace) -> int:
    """Run the whole service (embedded Redis unless FPF_REDIS_URL is set) until Ctrl-C."""
    from service.ops.launcher import LaunchConfig, LaunchError, up

    settings = get_settings()
    external = settings.redis_url if "redis_url" in settings.model_fields_set else None
    keys = settings.keys_file if "keys_file" in settings.model_fields_set else keys_file(args.data_dir)
    if not bind_allowed(args.host, keys):
        return 1
    os.environ["FPF_KEYS_FILE"] = str(keys.resolve())  # the parts inherit it
    config = LaunchConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        workers=args.workers,
        redis_url=external,
        grace_s=args.grace,
        log_level=args.log_level,
        grpc_port=args.grpc_port or None,
    )
    try:
        return up(config)
    except LaunchError as exc:
        logging.getLogger("fpf-server").error("%s", exc)
        return 1


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``fpf-server`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(prog="fpf-server", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run Redis (embedded unless FPF_REDIS_URL is set), workers and the gateway")
    up.add_argument("--host", default="127.0.0.1", help="gateway address (default: %(default)s)")
    up.add_argument("--port", type=int, default=8000, help="gateway port (default: %(default)s)")
    up.add_argument(
        "--data-dir",
        type=Path,
        default=Path("var"),
        help="models, results, Redis files and pid files (default: ./%(default)s)",
    )
    up.add_argument(
        "--grpc-port",
        type=int,
        default=50051,
        help="gRPC port, on the gateway's address; 0 serves no gRPC (default: %(default)s)",
    )
    up.add_argument("--workers", type=_positive_int, default=1, help="Celery worker processes (default: 1)")
    up.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds each part may take to stop before it is killed (default: %(default)s)",
    )
    up.set_defaults(handler=run_up)

    gateway = commands.add_parser("gateway", help="run the HTTP gateway (uvicorn) alone")
    gateway.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    gateway.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    gateway.set_defaults(handler=lambda a: run_gateway(a.host, a.port, a.log_level))

    grpc = commands.add_parser("grpc", help="run the gRPC server alone (beside or instead of the gateway)")
    grpc.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    grpc.add_argument("--port", type=int, default=50051, help="port to listen on (default: %(default)s)")
    grpc.add_argument(
        "--threads",
        type=_positive_int,
        default=32,
        help="concurrent calls; each WatchJob holds one (default: %(default)s)",
    )
    grpc.set_defaults(handler=lambda a: run_grpc(a.host, a.port, a.threads))

    worker = commands.add_parser("worker", help="run one Celery worker process (queue from FPF_QUEUE)")
    worker.add_argument("--gpu", type=int, default=None, help="pin to this GPU (sets CUDA_VISIBLE_DEVICES)")
    worker.add_argument("--name", default=None, help="Celery node name before '@host' (default: gpuN or worker)")
    worker.set_defaults(handler=lambda a: exec_worker(a.gpu, a.name, a.log_level))

    add_keys_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fpf-server`` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
