"""The API-key store: which keys exist, whose tenant and role each carries; only their hashes are kept.

Keys live in one JSON file (``FPF_KEYS_FILE``, by default ``var/keys.json`` next to, never inside,
the artifact directory that workers and model sandboxes see). A key is 256 random bits, so a
plain sha256 of it is as safe to store as a slow password hash: slow hashes protect guessable
passwords, and nobody can enumerate 2**256 keys. The fast hash lets every request find its key
with one dictionary lookup. The gateway re-reads the file when it changes, so keys created or
revoked with ``fpf-server keys`` take effect without a restart.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import json
import os
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

#: Tenant names become parts of Redis keys and file names: short, lower case, no separators.
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_KEY_PREFIX = "fpf"


class Role(str, Enum):
    """What a key may see: ``user`` its own tenant's models and jobs, ``admin`` everyone's."""

    USER = "user"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """One key's record; ``sha256`` is the hex digest of the key text, never the key itself."""

    id: str
    tenant: str
    role: Role
    sha256: str
    created_at: float
    revoked_at: float | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(name: str) -> str:
    """``name`` when it is a valid tenant name; ValueError otherwise."""
    if not TENANT_PATTERN.match(name):
        raise ValueError(f"tenant {name!r} must match {TENANT_PATTERN.pattern} (lower-case letters, digits, _ and -)")
    return name


class KeyStore:
    """API keys in a JSON file, written atomically under an exclusive lock.

    Parameters
    ----------
    path : Path
        The keys file; created (mode 0600) with the first key.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._keys: tuple[ApiKey, ...] = ()
        self._by_hash: dict[str, ApiKey] = {}

    # --- reading ------------------------------------------------------------------------
    def list(self) -> list[ApiKey]:
        """Every key record, revoked ones included, oldest first."""
        self._refresh()
        return list(self._keys)

    def any_keys(self) -> bool:
        """Whether a key was ever created here: from then on every request needs one.

        Revoked keys count, so revoking the last key locks the API rather than opening it.
        """
        self._refresh()
        return bool(self._keys)

    def lookup(self, key: str) -> ApiKey | None:
        """The active record of the key text ``key``; None for an unknown or revoked key."""
        self._refresh()
        record = self._by_hash.get(hash_key(key))
        return record if record is not None and record.active else None

    # --- changing -----------------------------------------------------------------------
    def create(self, tenant: str, role: Role = Role.USER) -> tuple[ApiKey, str]:
        """Make a new key for ``tenant``; returns its record and the key text (shown once, stored nowhere)."""
        check_tenant(tenant)
        key_id = secrets.token_hex(6)
        key = f"{_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(id=key_id, tenant=tenant, role=Role(role), sha256=hash_key(key), created_at=time.time())
        with self._locked() as keys:
            keys.append(record)
        return record, key

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key by its id (idempotent); KeyError when there is no such key."""
        with self._locked() as keys:
            for i, record in enumerate(keys):
                if record.id == key_id:
                    if record.active:
                        keys[i] = replace(record, revoked_at=time.time())
                    return keys[i]
        raise KeyError(key_id)

    # --- internals ----------------------------------------------------------------------
    def _refresh(self) -> None:
        """Re-read the file when its identity, size or modification time changed."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._keys, self._by_hash = None, (), {}
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            self._keys = tuple(_read(self.path))
            self._by_hash = {k.sha256: k for k in self._keys}
            self._stamp = stamp

    @contextmanager
    def _locked(self) -> Iterator[builtins.list[ApiKey]]:
        """The key list to change in place; written back atomically when the block succeeds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = _read(self.path) if self.path.exists() else []
            yield keys
            _write(self.path, keys)
        self._stamp = None


def _read(path: Path) -> list[ApiKey]:
    document = json.loads(path.read_text())
    return [ApiKey(**{**entry, "role": Role(entry["role"])}) for entry in document["keys"]]


def _write(path: Path, keys: list[ApiKey]) -> None:
    """Replace the file in one rename, readable by its owner only."""
    document = {"version": 1, "keys": [{**asdict(k), "role": k.role.value} for k in keys]}
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(document, out, indent=1)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
