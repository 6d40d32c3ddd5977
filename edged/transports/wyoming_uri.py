"""Where the Wyoming server listens: ``unix:///PATH`` or ``tcp://HOST:PORT``, loopback unless allowed."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class WyomingAddress:
    path: Path | None = None  # unix://
    host: str | None = None   # tcp://
    port: int | None = None

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path is not None else f"tcp://{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_wyoming_uri(uri: str, *, allow_remote: bool) -> WyomingAddress:
    """Raise ValueError saying what to write instead; a name other than localhost counts as remote."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{uri!r} is not a valid URI ({exc}); use unix:///run/edged/wyoming.sock "
                         "or tcp://127.0.0.1:10700") from None
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/") or parts.query or parts.fragment:
            raise ValueError(f"{uri!r}: a unix URI is unix:// followed by an absolute path, "
                             "e.g. unix:///run/edged/wyoming.sock")
        return WyomingAddress(path=Path(parts.path))
    if parts.scheme == "tcp":
        host = parts.hostname
        if not host or port is None or parts.path not in ("", "/") or parts.query or parts.username:
            raise ValueError(f"{uri!r}: a tcp URI is tcp://HOST:PORT, e.g. tcp://127.0.0.1:10700")
        if port == 0:
            raise ValueError(f"{uri!r}: port 0 is not a fixed port; pick one, e.g. 10700")
        if not allow_remote and not is_loopback(host):
            # Wyoming has no authentication: anyone who reaches the port can use the model.
            raise ValueError(f"{host} is not loopback and Wyoming has no authentication; use 127.0.0.1 "
                             "or set [wyoming] allow_remote = true (docs/security.md)")
        return WyomingAddress(host=host, port=port)
    raise ValueError(f"{uri!r}: only unix:// and tcp:// are served, e.g. unix:///run/edged/wyoming.sock "
                     "or tcp://127.0.0.1:10700")
