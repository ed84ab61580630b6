"""The gRPC server: FixedPointService, the standard health service and server reflection.

It runs beside the REST gateway (``fpf-server grpc``, or with the rest from ``fpf-server up``)
over the same Redis job store and data directory, and like the gateway it sweeps lost and
expired jobs, so that it can also serve alone.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from fpf_client.rpc.stubs import SERVICE_NAME, load
from service.core.api_keys import KeyStore
from service.core.artifacts import ArtifactStore
from service.core.janitor import Janitor, JanitorPolicy
from service.core.outages import OUTAGE_ERRORS, bound_broker, redis_client
from service.core.queue import Dispatcher, make_celery
from service.core.settings import Settings, get_settings
from service.core.store import RecordStore
from service.gateway.auth import Authenticator, UnsafeBind, check_bind
from service.gateway.quotas import QuotaLimits, Quotas
from service.grpc.servicer import Authenticate, FixedPointServicer

log = logging.getLogger(__name__)

#: Concurrent calls served (each WatchJob holds one thread while it follows its job).
DEFAULT_THREADS = 32
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class PortInUse(OSError):
    """The server's address is taken (by another fpf, or anything else)."""


@dataclass
class GrpcServer:
    """A started server and the housekeeping thread beside it; :meth:`stop` ends both."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    _stop: threading.Event
    _housekeeping: threading.Thread

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()

    def stop(self, grace_s: float = 5.0) -> None:
        """Report NOT_SERVING, let calls in flight finish for ``grace_s`` seconds, then stop."""
        self.health.enter_graceful_shutdown()
        self._stop.set()
        self.server.stop(grace_s).wait()
        self._housekeeping.join(timeout=grace_s)


def start_server(
    address: str,
    settings: Settings | None = None,
    *,
    threads: int = DEFAULT_THREADS,
    authenticate: Authenticate | None = None,
) -> GrpcServer:
    """Serve on ``address`` (``host:port``; port 0 picks a free one) and return at once.

    Callers are authenticated by ``authenticate`` (default: the API keys of ``FPF_KEYS_FILE``,
    as the REST gateway does), and messages up to ``FPF_MAX_BODY_BYTES`` are accepted, the
    gateway's body limit.
    """
    settings = settings or get_settings()
    store = RecordStore(redis_client(settings), settings.redis_prefix, result_ttl_s=settings.result_ttl_s)
    artifacts = ArtifactStore(settings.data_dir)
    dispatcher = Dispatcher(bound_broker(make_celery(settings), settings), settings.queue)
    janitor = Janitor(store, artifacts, dispatcher, JanitorPolicy.of(settings))

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fpf-grpc"),
        # No SO_REUSEPORT: a second server on a taken port must fail, not share the port with the first.
        options=[("grpc.max_receive_message_length", settings.max_body_bytes), ("grpc.so_reuseport", 0)],
    )
    authenticate = authenticate or Authenticator(KeyStore(settings.keys_file))
    quotas = Quotas(QuotaLimits.of(settings), store)
    load().pb2_grpc.add_FixedPointServiceServicer_to_server(
        FixedPointServicer(settings, store, artifacts, dispatcher, authenticate, quotas), server
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc's "Failed to bind to address"
        raise PortInUse(f"cannot listen on {address}: the port is in use") from exc
    if port == 0:
        raise PortInUse(f"cannot listen on {address}: the port is in use")
    server.start()

    stop = threading.Event()
    housekeeping = threading.Thread(
        target=_housekeeping,
        args=(store, janitor, health_servicer, settings, stop),
        name="fpf-grpc-housekeeping",
        daemon=True,
    )
    housekeeping.start()
    log.info("gRPC server listening on %s", address.rsplit(":", 1)[0] + f":{port}")
    return GrpcServer(server, port, health_servicer, stop, housekeeping)


def _housekeeping(
    store: RecordStore,
    janitor: Janitor,
    health_servicer: health.HealthServicer,
    settings: Settings,
    stop: threading.Event,
) -> None:
    """Sweep lost and expired jobs, and serve FixedPointService's health as whether Redis answers."""
    health_servicer.set("", SERVING)
    while not stop.is_set():
        try:
            store.ping()
            janitor.sweep()
            health_servicer.set(SERVICE_NAME, SERVING)
        except OUTAGE_ERRORS as exc:
            log.warning(
                "Redis unreachable (%s: %s); reporting %s as NOT_SERVING", type(exc).__name__, exc, SERVICE_NAME
            )
            health_servicer.set(SERVICE_NAME, NOT_SERVING)
        except Exception:
            log.exception("housekeeping failed; reporting %s as NOT_SERVING", SERVICE_NAME)
            health_servicer.set(SERVICE_NAME, NOT_SERVING)
        stop.wait(settings.janitor_interval_s)


def serve(host: str, port: int, *, threads: int = DEFAULT_THREADS) -> int:
    """Run the server in this process until SIGINT or SIGTERM.

    Like the gateway, it refuses an address beyond loopback while no API key exists.
    """
    try:
        check_bind(host, KeyStore(get_settings().keys_file))
    except UnsafeBind as exc:
        log.error("%s", exc)
        return 1
    try:
        running = start_server(f"[{host}]:{port}" if ":" in host else f"{host}:{port}", threads=threads)
    except PortInUse:
        log.error("gRPC port %d on %s is in use; choose another with --port (fpf-server up: --grpc-port)", port, host)
        return 1
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stopping.wait()
    log.info("stopping the gRPC server")
    running.stop()
    return 0
