"""Editing ``clients.toml`` for ``edged keys allow``: validated, atomic, comments kept on add."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from edged.crypto.allowlist import (
    AllowListFile,
    ClientEntry,
    parse_allow_list,
    read_allow_list_file,
)
from edged.atomic import write_atomic
from edged.errors import ConfigError

NEW_FILE_MODE: Final = 0o644
FILE_HEADER: Final = (
    "# Clients allowed to send sealed requests to this edged device.\n"
    "# Managed with `edged keys allow add|remove|list`; see docs/security.md.\n"
)
_TOML_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(value: str) -> str:
    out = []
    for char in value:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def render_client(entry: ClientEntry) -> str:
    """One ``[[clients]]`` table in TOML."""
    lines = [
        "[[clients]]",
        f"label = {_toml_string(entry.label)}",
        f"public_key = {_toml_string(entry.public_key)}",
        f"response_prefix = {_toml_string(entry.response_prefix)}",
    ]
    if entry.expires is not None:
        lines.append(f"expires = {_toml_datetime(entry.expires)}")
    if entry.requests_per_minute is not None:
        lines.append(f"requests_per_minute = {entry.requests_per_minute}")
    if entry.commands:
        lines.append("commands = true")
    return "\n".join(lines) + "\n"


def render_allow_list(parsed: AllowListFile) -> str:
    return FILE_HEADER + "".join("\n" + render_client(entry) for entry in parsed.clients)


def _write_checked(path: Path, text: str) -> None:
    """Validate ``text`` as an allow-list, then replace ``path`` keeping its mode and owner."""
    parse_allow_list(text, str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        info = None
    mode = (info.st_mode & 0o7777) if info is not None else NEW_FILE_MODE
    write_atomic(path, text.encode("utf-8"), mode=mode)
    if info is not None and (info.st_uid, info.st_gid) != (os.geteuid(), os.getegid()):
        try:
            os.chown(path, info.st_uid, info.st_gid)
        except PermissionError:
            pass  # not root: the file now belongs to us, which the operator chose by running us


def add_client(path: Path, entry: ClientEntry) -> None:
    """Append ``entry`` to the allow-list at ``path`` (created if missing); duplicates are refused."""
    current = read_allow_list_file(path)
    for existing in current.clients:
        if existing.label == entry.label:
            raise ConfigError(f"{path}: a client labelled {entry.label!r} exists; remove it first or pick another label")
        if existing.public_key == entry.public_key:
            raise ConfigError(f"{path}: this public key is already allowed as {existing.label!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = FILE_HEADER
    if text and not text.endswith("\n"):
        text += "\n"
    _write_checked(path, text + "\n" + render_client(entry))


def remove_client(path: Path, *, label: str | None = None, public_key: str | None = None) -> ClientEntry:
    """Remove the entry matching ``label`` or ``public_key``; returns it. The file is re-rendered."""
    if (label is None) == (public_key is None):
        raise ValueError("give exactly one of label and public_key")
    current = read_allow_list_file(path)
    wanted_key = public_key.lower() if public_key is not None else None
    matches = [entry for entry in current.clients if entry.label == label or entry.public_key == wanted_key]
    if not matches:
        what = f"label {label!r}" if label is not None else f"public key {public_key}"
        raise ConfigError(f"{path}: no client with {what}; see `edged keys allow list`")
    kept = AllowListFile(clients=[entry for entry in current.clients if entry is not matches[0]])
    _write_checked(path, render_allow_list(kept))
    return matches[0]
