"""The HTTP listener's settings, resolved from the config; no aiohttp here, so the wiring can build them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from edged.errors import ConfigError


@dataclass(frozen=True)
class HttpSettings:
    socket_path: Path
    mode: int
    max_body_bytes: int
    plaintext_uids: set[int]
    plaintext_gids: set[int]
    keys_path: Path
    listen: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name could resolve anywhere


def check_listen(settings: HttpSettings) -> None:
    """A listener off this machine carries API keys and prompts: refuse it without TLS."""
    if settings.listen is None:
        return
    host, _ = split_listen(settings.listen)
    if not is_loopback(host) and settings.tls_cert is None:
        raise ConfigError(f"http.listen {settings.listen!r} is not a loopback address: set http.tls_cert and "
                          "http.tls_key, or listen on 127.0.0.1 / [::1] (e.g. behind a TLS proxy)")


