"""Redis outages seen from the gateway and the gRPC server: short timeouts, and a 503 instead of a crash.

Every Redis client of the gateway (job store, event streams, Celery broker) gives up after
``FPF_REDIS_CONNECT_TIMEOUT_S`` / ``FPF_REDIS_SOCKET_TIMEOUT_S`` and retries a broken connection
once (a Redis that restarted leaves dead connections in the pools), never a timed-out command
(a frozen Redis would only double the wait). The error that results is answered as
``503 service_unavailable`` with ``Retry-After``, by REST and gRPC alike.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from fpf_client.errors import ServiceUnavailable
from service.core.settings import Settings

#: What an unreachable or frozen Redis raises: redis-py's errors, and kombu's when a publish fails.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError, OperationalError)

#: Pause before the one reconnection attempt (seconds, with jitter).
_RECONNECT_BACKOFF = ExponentialWithJitterBackoff(base=0.05, cap=0.2)


def _client_options(settings: Settings) -> dict[str, Any]:
    return {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "decode_responses": True,
    }


def redis_client(settings: Settings) -> redis.Redis:
    """A client of ``FPF_REDIS_URL`` that fails within the timeouts while Redis is down."""
    return redis.Redis.from_url(
        settings.redis_url,
        **_client_options(settings),
        retry=Retry(_RECONNECT_BACKOFF, 1, supported_errors=(redis.ConnectionError,)),
    )


def async_redis_client(settings: Settings) -> aioredis.Redis:
    """The asyncio twin of :func:`redis_client` (event streams)."""
    return aioredis.Redis.from_url(
        settings.redis_url,
        **_client_options(settings),
        retry=AsyncRetry(_RECONNECT_BACKOFF, 1, supported_errors=(redis.ConnectionError,)),
    )


def bound_broker(celery: Celery, settings: Settings) -> Celery:
    """Bound the gateway's publishes and worker pings to the same timeouts; returns ``celery``.

    kombu otherwise waits forever on a frozen broker, and retries a refused connection forever
    before a control command; here it reconnects once, then raises (a 503).
    """
    once = {"max_retries": 1, "interval_start": 0.05, "interval_step": 0.0, "interval_max": 0.05}
    celery.conf.update(
        broker_connection_timeout=settings.redis_connect_timeout_s,
        broker_transport_options={
            **celery.conf.broker_transport_options,
            **once,
            "socket_connect_timeout": settings.redis_connect_timeout_s,
            "socket_timeout": settings.redis_socket_timeout_s,
        },
        task_publish_retry_policy=once,
    )
    return celery


def unavailable(exc: BaseException, retry_after_s: int) -> ServiceUnavailable:
    """The 503 answered for an outage error ``exc``: try again in ``retry_after_s`` seconds."""
    return ServiceUnavailable(
        f"the job store (Redis) is unreachable: {type(exc).__name__}: {exc}", retry_after_s=retry_after_s
    )
