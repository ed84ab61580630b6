"""Who is calling: API keys to principals, shared by the REST routes and the gRPC servicer.

Both transports hand the raw ``Authorization`` value (HTTP header or gRPC metadata) to
:class:`Authenticator` and pass the :class:`Principal` it returns to the store and the
operations, which scope every record to the principal's tenant.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from fpf_client.errors import Unauthenticated
from service.core.api_keys import KeyStore, Role
from service.core.records import DEFAULT_TENANT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """The caller: a tenant, a role, and the id of the key used (None without keys)."""

    tenant: str
    role: Role
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def may_see(self, tenant: str) -> bool:
        """Whether a record of ``tenant`` is visible to this caller."""
        return self.is_admin or tenant == self.tenant


#: The caller of a server that has no keys (loopback only): its one user, who sees everything.
LOCAL = Principal(tenant=DEFAULT_TENANT, role=Role.ADMIN)


class Authenticator:
    """Turn an ``Authorization`` value into a :class:`Principal`, or raise ``unauthenticated`` (401)."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys

    def __call__(self, authorization: str | None) -> Principal:
        if not self.keys.any_keys():
            return LOCAL
        if not authorization:
            raise Unauthenticated("this server requires an API key: send 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
        record = self.keys.lookup(key.strip())
        if record is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return Principal(tenant=record.tenant, role=record.role, key_id=record.id)


class UnsafeBind(RuntimeError):
    """The gateway was asked to listen beyond loopback while no API key exists."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys: KeyStore) -> None:
    """Refuse a non-loopback address without keys; warn that a keyless server is open to local users."""
    if keys.any_keys():
        return
    if not is_loopback(host):
        raise UnsafeBind(
            f"refusing to listen on {host} without API keys (anyone who reaches it could run code on this "
            f"machine); create one with 'fpf-server keys create --tenant NAME' (keys file {keys.path}), "
            f"or listen on 127.0.0.1"
        )
    log.warning(
        "no API keys in %s: the API is open to every user of this machine, and listens on %s only", keys.path, host
    )
