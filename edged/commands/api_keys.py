"""`edged keys api-key new|list|revoke`: bearer keys for the HTTP API on TCP (`[http] listen`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from edged.crypto.api_keys import API_KEYS_FILE, add_key, read_keys_file, revoke_key
from edged.errors import ConfigError

RELOAD_HINT = "the running daemon picks it up within seconds, or at once on SIGHUP (systemctl reload edged)"

EPILOG = f"""\
examples:
  edged keys api-key new home-assistant > ha.key     the key is printed once, on stdout only
  edged keys api-key list
  edged keys api-key revoke home-assistant
clients send it as `Authorization: Bearer <key>` (e.g. the openai package's api_key=...).
keys live hashed in <state dir>/{API_KEYS_FILE}; only TCP listeners ([http] listen) ask for one.
details: docs/security.md
"""


def _err(message: str) -> int:
    print(f"edged keys api-key: {message}", file=sys.stderr)
    return 1


def _path(args: argparse.Namespace, state_dir: Callable[[argparse.Namespace], Path]) -> Path:
    return state_dir(args) / API_KEYS_FILE


def register(actions: Any, common: Callable[[argparse.ArgumentParser], None],
             state_dir: Callable[[argparse.Namespace], Path]) -> None:
    """Add `api-key` to the `keys` actions; `common` adds --state-dir, `state_dir` resolves it."""
    group = actions.add_parser("api-key", help="API keys for the HTTP API over TCP",
                               description="Make, list and revoke the bearer keys that HTTP clients on TCP "
                                           "([http] listen) must send. The Unix socket checks peer "
                                           "credentials instead and needs no key.",
                               epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="api_key_command", required=True, metavar="ACTION")

    def new(args: argparse.Namespace) -> int:
        path = _path(args, state_dir)
        try:
            key = add_key(path, args.label)
        except (ConfigError, OSError) as exc:
            return _err(str(exc))
        print(key)
        print(f"added API key {args.label!r} to {path}; it is shown only now. {RELOAD_HINT}", file=sys.stderr)
        return 0

    def listing(args: argparse.Namespace) -> int:
        path = _path(args, state_dir)
        try:
            parsed = read_keys_file(path)
        except ConfigError as exc:
            return _err(f"{exc}\nfix or remove the file; the daemon keeps its last good keys")
        if not parsed.keys:
            print(f"no API keys in {path}; make one with `edged keys api-key new LABEL`")
            return 0
        print(f"{'label':<24} {'created':<22} sha256 (first 16)")
        for entry in parsed.keys:
            print(f"{entry.label:<24} {entry.created:<22} {entry.sha256[:16]}")
        return 0

    def revoke(args: argparse.Namespace) -> int:
        path = _path(args, state_dir)
        try:
            revoke_key(path, args.label)
        except (ConfigError, OSError) as exc:
            return _err(str(exc))
        print(f"revoked API key {args.label!r} in {path}; {RELOAD_HINT}")
        return 0

    for name, func, help_text, example in (
            ("new", new, "make a key for LABEL and print it once on stdout", "edged keys api-key new grafana"),
            ("list", listing, "list key labels and creation times (never the keys)", "edged keys api-key list"),
            ("revoke", revoke, "delete the key with LABEL; clients using it get 401", "edged keys api-key revoke grafana")):
        parser = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".",
                                epilog=f"example: {example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        common(parser)
        if name != "list":
            parser.add_argument("label", metavar="LABEL", help="short name of the client, e.g. home-assistant")
        parser.set_defaults(func=func)
