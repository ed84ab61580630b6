"""API keys: the key store, the authenticator, the bind rule and ``fpf-server keys``."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fpf_client.errors import Unauthenticated
from service.core.api_keys import KeyStore, Role
from service.gateway.auth import LOCAL, Authenticator, Principal, UnsafeBind, check_bind, is_loopback
from service.ops.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys.json")


def test_only_the_sha256_of_a_key_is_stored(keys: KeyStore) -> None:
    record, key = keys.create("lab-a")
    text = keys.path.read_text()
    assert key not in text and key.split("_", 2)[2] not in text
    assert json.loads(text)["keys"][0]["sha256"] == hashlib.sha256(key.encode()).hexdigest() == record.sha256
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


def test_keys_are_unique_and_high_entropy(keys: KeyStore) -> None:
    made = [keys.create("lab-a")[1] for _ in range(20)]
    assert len(set(made)) == 20
    assert all(len(k.split("_", 2)[2]) >= 43 for k in made)  # 32 random bytes, urlsafe base64


def test_lookup_finds_active_keys_only(keys: KeyStore) -> None:
    user, user_key = keys.create("lab-a")
    admin, admin_key = keys.create("lab-b", Role.ADMIN)
    assert keys.lookup(user_key) == user and keys.lookup(admin_key).role is Role.ADMIN
    assert keys.lookup(user_key + "x") is None and keys.lookup("") is None
    keys.revoke(user.id)
    assert keys.lookup(user_key) is None and keys.lookup(admin_key) == admin
    assert [k.active for k in keys.list()] == [False, True]


def test_revoking_an_unknown_key_raises(keys: KeyStore) -> None:
    with pytest.raises(KeyError):
        keys.revoke("nope")


def test_another_store_on_the_same_file_sees_changes_without_restart(keys: KeyStore) -> None:
    gateway = KeyStore(keys.path)
    assert not gateway.any_keys()
    record, key = keys.create("lab-a")
    assert gateway.lookup(key) == record
    keys.revoke(record.id)
    assert gateway.lookup(key) is None


def test_bad_tenant_names_are_refused(keys: KeyStore) -> None:
    for name in ["", "Lab", "a:b", "a/b", "x" * 64, "-lab"]:
        with pytest.raises(ValueError):
            keys.create(name)


def test_without_keys_every_caller_is_the_local_admin(keys: KeyStore) -> None:
    assert Authenticator(keys)(None) == LOCAL and LOCAL.is_admin


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer wrong-key"])
def test_once_a_key_exists_a_request_needs_a_valid_one(keys: KeyStore, header: str | None) -> None:
    keys.create("lab-a")
    with pytest.raises(Unauthenticated):
        Authenticator(keys)(header)


def test_a_valid_key_gives_its_tenant_and_role(keys: KeyStore) -> None:
    record, key = keys.create("lab-a")
    assert Authenticator(keys)(f"Bearer {key}") == Principal("lab-a", Role.USER, record.id)
    assert Authenticator(keys)(f"bearer  {key} ") == Principal("lab-a", Role.USER, record.id)


def test_revoking_the_last_key_locks_the_api_rather_than_opening_it(keys: KeyStore) -> None:
    record, key = keys.create("lab-a")
    keys.revoke(record.id)
    for header in (None, f"Bearer {key}"):
        with pytest.raises(Unauthenticated):
            Authenticator(keys)(header)


def test_visibility_of_tenants() -> None:
    user, admin = Principal("a", Role.USER), Principal("b", Role.ADMIN)
    assert user.may_see("a") and not user.may_see("b")
    assert admin.may_see("a") and admin.may_see("b")


@pytest.mark.parametrize(
    "host,loopback",
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.4", False),
        ("lab-server", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_listening_beyond_loopback_needs_a_key(keys: KeyStore) -> None:
    check_bind("127.0.0.1", keys)
    with pytest.raises(UnsafeBind, match="fpf-server keys create"):
        check_bind("0.0.0.0", keys)
    keys.create("lab-a")
    check_bind("0.0.0.0", keys)


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "create", "--tenant", "lab-a", "--role", "admin", "--data-dir", str(tmp_path)]) == 0
    key = capsys.readouterr().out.split()[-1]
    store = KeyStore(tmp_path / "keys.json")
    record = store.lookup(key)
    assert record is not None and record.tenant == "lab-a" and record.role is Role.ADMIN

    assert main(["keys", "list", "--data-dir", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert record.id in listing and "lab-a" in listing and key not in listing

    assert main(["keys", "revoke", record.id, "--data-dir", str(tmp_path)]) == 0
    assert store.lookup(key) is None
    assert main(["keys", "revoke", "nope", "--data-dir", str(tmp_path)]) == 1


def test_cli_refuses_a_bad_tenant(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        main(["keys", "create", "--tenant", "Not Valid", "--data-dir", str(tmp_path)])
    assert not (tmp_path / "keys.json").exists()


def test_the_console_command_prints_the_key_as_its_last_word(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "service.ops.cli", "keys", "create", "--tenant", "lab-a", "--data-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert KeyStore(tmp_path / "keys.json").lookup(out.split()[-1]) is not None


def test_the_gateway_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    env = {"FPF_KEYS_FILE": str(tmp_path / "keys.json"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "service.ops.cli", "gateway", "--host", "0.0.0.0", "--port", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "refusing to listen on 0.0.0.0 without API keys" in done.stderr
