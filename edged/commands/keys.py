"""`edged keys`: the device identity, client keys and the client allow-list."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edged.crypto.allowlist import (
    CLIENTS_FILE,
    ClientEntry,
    client_fingerprint,
    read_allow_list_file,
)
from edged.crypto.allowlist_edit import add_client, remove_client
from edged.crypto.keys import DeviceIdentity, write_private_key_file
from edged.errors import ConfigError

RELOAD_HINT = "the running daemon applies it on its next allow-list check or on SIGHUP (systemctl reload edged)"

KEYS_EPILOG = """\
provisioning, step by step:
  edged keys init                                    on the device: make its identity key
  edged keys show                                    note the fingerprint; clients pin it
  edged keys client-new --out laptop.key             on the client: make a client key
  edged keys allow add --label laptop \\
      --public-key <hex printed above> --response-prefix edged/clients/laptop
                                                     on the device: allow that client
  edged keys allow list                              see who is allowed
details: docs/security.md
"""


def _err(message: str) -> int:
    print(f"edged keys: {message}", file=sys.stderr)
    return 1


def _state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    from edged.paths import default_state_dir

    return default_state_dir()


def _clients_path(args: argparse.Namespace) -> Path:
    return Path(args.clients) if args.clients is not None else _state_dir(args) / CLIENTS_FILE


def cmd_init(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    existed = DeviceIdentity.path_in(state_dir).exists()
    try:
        identity = DeviceIdentity.load_or_create(state_dir)
    except (ConfigError, OSError) as exc:
        return _err(f"{exc}")
    action = "exists, kept" if existed else "created"
    print(f"identity: {DeviceIdentity.path_in(state_dir)} ({action})")
    print(f"fingerprint: {identity.fingerprint}")
    print(f"public_key: {identity.public_bytes.hex()}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        identity = DeviceIdentity.load(_state_dir(args))
    except (ConfigError, OSError) as exc:
        return _err(f"{exc}")
    print(f"fingerprint: {identity.fingerprint}")
    print(f"public_key: {identity.public_bytes.hex()}")
    return 0


def cmd_client_new(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(args.out)
    key = Ed25519PrivateKey.generate()
    try:
        write_private_key_file(out, key, overwrite=args.force)
    except FileExistsError:
        return _err(f"{out} exists; pick another --out or pass --force to replace that key")
    except OSError as exc:
        return _err(f"cannot write {out}: {exc.strerror}")
    public_hex = key.public_key().public_bytes_raw().hex()
    print(public_hex)
    print(f"wrote private key {out} (mode 0600); allow it on the device with:\n"
          f"  edged keys allow add --label NAME --public-key {public_hex} --response-prefix PREFIX",
          file=sys.stderr)
    return 0


def _parse_expires(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise ValueError("add a UTC offset, e.g. 2027-01-31T00:00:00Z")
    return value


def cmd_allow_add(args: argparse.Namespace) -> int:
    path = _clients_path(args)
    try:
        expires = _parse_expires(args.expires) if args.expires else None
    except ValueError as exc:
        return _err(f"--expires {args.expires!r}: {exc}")
    try:
        entry = ClientEntry(label=args.label, public_key=args.public_key, response_prefix=args.response_prefix,
                            expires=expires, requests_per_minute=args.rpm, commands=args.commands)
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
                             for e in exc.errors())
        return _err(problems.replace("--requests-per-minute", "--rpm"))
    try:
        add_client(path, entry)
    except (ConfigError, OSError) as exc:
        return _err(f"{exc}")
    print(f"allowed {entry.label} ({client_fingerprint(entry.public_key)}) in {path}; {RELOAD_HINT}")
    return 0


def cmd_allow_remove(args: argparse.Namespace) -> int:
    path = _clients_path(args)
    try:
        removed = remove_client(path, label=args.label, public_key=args.public_key)
    except (ConfigError, OSError) as exc:
        return _err(f"{exc}")
    print(f"removed {removed.label} ({client_fingerprint(removed.public_key)}) from {path}; {RELOAD_HINT}")
    return 0


def cmd_allow_list(args: argparse.Namespace) -> int:
    path = _clients_path(args)
    try:
        parsed = read_allow_list_file(path)
    except ConfigError as exc:
        return _err(f"{exc}\nfix the file by hand or restore a backup; the daemon keeps its last good list")
    if not parsed.clients:
        print(f"no clients allowed in {path}; add one with `edged keys allow add`")
        return 0
    now = time.time()
    print(f"{'label':<24} {'public key':<64} {'response prefix':<32} {'rpm':>6}  expires")
    for entry in parsed.clients:
        rpm = str(entry.requests_per_minute) if entry.requests_per_minute else "-"
        if entry.expires is None:
            expires = "never"
        else:
            expires = entry.expires.isoformat() + (" (EXPIRED)" if entry.expires.timestamp() <= now else "")
        print(f"{entry.label:<24} {entry.public_key:<64} {entry.response_prefix:<32} {rpm:>6}  {expires}")
    return 0


def _common(parser: argparse.ArgumentParser, *, clients: bool = False) -> None:
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="device state directory (default: $STATE_DIRECTORY, /var/lib/edged as root, "
                             "else ~/.local/state/edged)")
    if clients:
        parser.add_argument("--clients", type=Path, default=None,
                            help=f"allow-list file (default: <state dir>/{CLIENTS_FILE})")


def _sub(parent: Any, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    description = help_text[0].upper() + help_text[1:] + "."
    parser: argparse.ArgumentParser = parent.add_parser(
        name, help=help_text, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser


def register(subparsers: Any) -> None:
    """Add `keys` and its sub-commands to the top-level sub-parsers."""
    keys = subparsers.add_parser(
        "keys", help="device identity, client keys, the client allow-list and HTTP API keys",
        description="Manage the keys of the end-to-end envelope (e2e-v1): the device identity that "
                    "clients pin, client keys, and the allow-list of clients that may send requests.",
        epilog=KEYS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    init = _sub(actions, "init", "create the device identity key if missing (mode 0600)",
                "example: sudo edged keys init --state-dir /var/lib/edged")
    _common(init)
    init.set_defaults(func=cmd_init)

    show = _sub(actions, "show", "print the identity fingerprint and public key for clients to pin",
                "example: edged keys show --state-dir /var/lib/edged")
    _common(show)
    show.set_defaults(func=cmd_show)

    client_new = _sub(actions, "client-new", "make a client private key file (0600) and print its public key",
                      "example: edged keys client-new --out ~/.config/edged/client.key")
    client_new.add_argument("--out", required=True, type=Path, help="where to write the private key (PEM)")
    client_new.add_argument("--force", action="store_true", help="replace an existing file at --out")
    client_new.set_defaults(func=cmd_client_new)

    allow = actions.add_parser("allow", help="add, remove or list allowed clients",
                               description="Edit the client allow-list (clients.toml).", epilog=KEYS_EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    allow_actions = allow.add_subparsers(dest="allow_command", required=True, metavar="ACTION")

    add = _sub(allow_actions, "add", "allow a client public key to send sealed requests",
               "example: edged keys allow add --label laptop --public-key e7f1...f2f0 \\\n"
               "           --response-prefix edged/clients/laptop --expires 2027-01-31T00:00:00Z --rpm 30\n"
               "use --response-prefix local for a client that talks over the Unix socket only")
    _common(add, clients=True)
    add.add_argument("--label", required=True, help="short unique name, e.g. laptop (letters, digits, . _ @ -)")
    add.add_argument("--public-key", required=True, help="the client's Ed25519 public key, 64 hex digits")
    add.add_argument("--response-prefix", required=True,
                     help="MQTT topic prefix the client's responses may go to, or 'local' for the Unix socket")
    add.add_argument("--expires", help="ISO 8601 time with offset after which the entry stops working")
    add.add_argument("--rpm", type=int, default=None, help="requests per minute allowed (default: unlimited)")
    add.add_argument("--commands", action="store_true",
                     help="also allow operator commands over MQTT (profile override, status refresh)")
    add.set_defaults(func=cmd_allow_add)

    remove = _sub(allow_actions, "remove", "revoke a client by label or public key",
                  "example: edged keys allow remove --label laptop")
    _common(remove, clients=True)
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", help="label of the entry to remove")
    which.add_argument("--public-key", help="public key (hex) of the entry to remove")
    remove.set_defaults(func=cmd_allow_remove)

    listing = _sub(allow_actions, "list", "print the allowed clients (expired entries are marked)",
                   "example: edged keys allow list --clients /var/lib/edged/clients.toml")
    _common(listing, clients=True)
    listing.set_defaults(func=cmd_allow_list)

    from edged.commands import api_keys

    api_keys.register(actions, _common, _state_dir)
