"""The settings the service of the gateway fault tests runs with (on a ``private_redis.PrivateRedis``)."""

from __future__ import annotations

#: The outage timeouts the fault service runs with (seconds); tests bound their waits by them.
FAULT_SETTINGS = {
    "FPF_REDIS_CONNECT_TIMEOUT_S": "1",
    "FPF_REDIS_SOCKET_TIMEOUT_S": "1",
    "FPF_READYZ_TIMEOUT_S": "3",
    "FPF_UNAVAILABLE_RETRY_AFTER_S": "2",
    # Staged files of an upload cut short are swept at the first janitor pass after this age.
    "FPF_ORPHAN_AFTER_S": "1",
    # Room for a body that takes the old gateway seconds to parse on its event loop.
    "FPF_MAX_BODY_BYTES": str(64 * 2**20),
}
