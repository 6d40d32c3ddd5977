"""The HTTP listener's settings, resolved from the config; no HTTP library here, so the wiring can build them."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from edged.errors import ConfigError, TransportError
from edged.transports.socket_file import bind_unix_socket

Listener = tuple[socket.socket, "ssl.SSLContext | None"]


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




def tls_context(settings: HttpSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"http.tls_cert/tls_key: cannot load {settings.tls_cert}: {exc}") from None
    return context


def bind_listeners(settings: HttpSettings) -> list[Listener]:
    """The listening sockets, bound now: every refusal (address in use, bad TLS files) happens at start.

    A socket accepts connections into its backlog from here on, so a client that connects before the
    HTTP server has taken it over waits instead of being refused (as with systemd socket activation).
    """
    check_listen(settings)
    context = tls_context(settings)
    listeners: list[Listener] = [(bind_unix_socket(settings.socket_path, settings.mode), None)]
    if settings.listen is not None:
        host, port = split_listen(settings.listen)
        try:
            tcp = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                       backlog=128)
        except OSError as exc:
            for sock, _ in listeners:
                sock.close()
            raise TransportError(f"http.listen {settings.listen}: cannot listen: {exc.strerror}") from None
        tcp.setblocking(False)
        listeners.append((tcp, context))
    return listeners
