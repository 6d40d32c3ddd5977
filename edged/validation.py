"""The strict pydantic base of every boundary model, and one way to name each bad field by its path."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from edged.atomic import read_bounded
from edged.errors import ConfigError


class StrictModel(BaseModel):
    """Strict types, unknown fields refused, frozen: every document edged reads from outside is one of these.

    Validators are built on first use (``defer_build``): building all ~50 models at import cost the
    daemon ~0.1 s of start-up on a 2-core x86 (more on a Pi), mostly for documents (manifests, trust
    roots, fleet messages) that a start never reads. The daemon builds the request path's models
    with ``prebuild`` while the model loads, so the first request pays nothing.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, defer_build=True)


def prebuild(*models: type[BaseModel]) -> None:
    """Build deferred validators now (the daemon: while the model loads on its own thread)."""
    for model in models:
        model.model_rebuild()

MAX_SHOWN = 20


def field_path(location: tuple[int | str, ...]) -> str:
    """`clients[2].public_key` style: list indexes in brackets, names joined with dots."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def describe_validation_error(error: ValidationError, source: str | None = None, *, show_values: bool = False,
                              separator: str = "\n") -> str:
    """One entry per bad field: `source: path: message`.

    `show_values` adds the offending value when it is a short scalar; leave it off for anything that
    can carry prompt text or key material (requests, signed documents).
    """
    entries = []
    for item in error.errors(include_url=False)[:MAX_SHOWN]:
        entry = f"{field_path(item['loc'])}: {item['msg'][:200]}"
        value = item.get("input")
        if show_values and item["type"] != "missing" and isinstance(value, (bool, int, float, str)):
            shown = repr(value)
            entry += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        entries.append(f"{source}: {entry}" if source else entry)
    if error.error_count() > MAX_SHOWN:
        entries.append(f"... and {error.error_count() - MAX_SHOWN} more")
    return separator.join(entries)


def read_toml(path: Path, max_bytes: int) -> dict[str, Any]:
    """A TOML file of at most ``max_bytes``; every way it can be unreadable is one ConfigError naming the file."""
    try:
        data = read_bounded(path, max_bytes)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ConfigError(f"{path}: larger than {_size(max_bytes)}; is this the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse_toml(text, str(path))


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    except RecursionError:  # tomllib recurses per nested array or inline table
        raise ConfigError(f"{source}: arrays or tables nested too deeply; no edged file needs that") from None
    except ValueError as exc:  # Python's limit on integer digits (4300): tomllib lets int() raise it as is
        if "digits" not in str(exc):
            raise ConfigError(f"{source}: a value TOML cannot read: {str(exc)[:100]}") from None
        raise ConfigError(f"{source}: an integer with more than {sys.get_int_max_str_digits()} digits; "
                          "no edged setting needs that") from None


def _size(limit: int) -> str:
    return f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
