"""``fpf-server keys create | list | revoke``: manage the API keys of a data directory.

``create`` prints the new key as the last word of its output, once; only its hash is kept.
The keys file is ``<--data-dir>/keys.json`` (the layout of ``fpf-server up``), or
``FPF_KEYS_FILE`` when no ``--data-dir`` is given.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from service.core.api_keys import ApiKey, KeyStore, Role, check_tenant
from service.core.settings import get_settings

KEYS_FILE_NAME = "keys.json"


def keys_file(data_dir: Path | None) -> Path:
    """The keys file of ``fpf-server up --data-dir DIR``, or of the settings when no directory is given."""
    return data_dir / KEYS_FILE_NAME if data_dir is not None else get_settings().keys_file


def _tenant(text: str) -> str:
    try:
        return check_tenant(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(key: ApiKey) -> str:
    state = "active" if key.active else f"revoked {_when(key.revoked_at)}"
    return f"{key.id:<14}{key.tenant:<24}{key.role.value:<7}{_when(key.created_at):<22}{state}"


def create(args: argparse.Namespace) -> int:
    record, key = KeyStore(keys_file(args.data_dir)).create(args.tenant, Role(args.role))
    print(f"created key {record.id} for tenant {record.tenant} ({record.role.value}); it is shown only now:")
    print(key)
    return 0


def list_keys(args: argparse.Namespace) -> int:
    print(f"{'ID':<14}{'TENANT':<24}{'ROLE':<7}{'CREATED':<22}STATE")
    for key in KeyStore(keys_file(args.data_dir)).list():
        print(_row(key))
    return 0


def revoke(args: argparse.Namespace) -> int:
    try:
        record = KeyStore(keys_file(args.data_dir)).revoke(args.key_id)
    except KeyError:
        print(f"no key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked key {record.id} of tenant {record.tenant}")
    return 0


def add_keys_command(commands: argparse._SubParsersAction) -> None:
    """Add ``keys`` and its subcommands to the ``fpf-server`` parser."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    data_dir = argparse.ArgumentParser(add_help=False)
    data_dir.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the data dir of 'fpf-server up' (keys in DIR/keys.json); default: FPF_KEYS_FILE",
    )

    made = actions.add_parser("create", parents=[data_dir], help="make a key for a tenant and print it once")
    made.add_argument("--tenant", type=_tenant, required=True, help="the lab the key belongs to")
    made.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.USER.value,
        help="user: the tenant's own models and jobs; admin: everyone's (default: %(default)s)",
    )
    made.set_defaults(handler=create)

    listed = actions.add_parser("list", parents=[data_dir], help="show every key (never the key itself)")
    listed.set_defaults(handler=list_keys)

    revoked = actions.add_parser("revoke", parents=[data_dir], help="revoke a key by its id")
    revoked.add_argument("key_id", help="the id shown by 'keys list'")
    revoked.set_defaults(handler=revoke)
