"""Parse and check an MQTT broker URL: ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from edged.errors import ConfigError

DEFAULT_PORTS: dict[str, int] = {"mqtt": 1883, "mqtts": 8883}
MAX_URL_LENGTH = 1024

# RFC 1123 labels, plus "_" because container service names (docker compose) often carry one.
_HOST_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_PORT_DIGITS = re.compile(r"^[0-9]{1,5}$")
# Whitespace and control characters are never valid anywhere in a URL; rejecting them up front
# stops "mqtt://host:1883 extra" or an embedded newline from being half-parsed.
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # a decoded user name may hold a space, never these


@dataclass(frozen=True)
class BrokerUrl:
    """A checked broker address; ``host`` is bare (no IPv6 brackets) as paho expects it."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int
    username: str | None
    password: str | None

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def redacted(self) -> str:
        """The URL for logs: the user is kept, the password never appears."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username is not None else ""
        return f"{self.scheme}://{user}{host}:{self.port}"


def parse_broker_url(text: str) -> BrokerUrl:
    """Parse ``text`` or raise ConfigError saying what is wrong (without echoing a password)."""
    if not text:
        raise ConfigError("MQTT URL is empty")
    if len(text) > MAX_URL_LENGTH:
        raise ConfigError(f"MQTT URL is longer than {MAX_URL_LENGTH} characters")
    if _FORBIDDEN.search(text):
        raise ConfigError("MQTT URL contains whitespace or control characters")
    scheme_text, separator, rest = text.partition("://")
    if not separator:
        raise ConfigError("MQTT URL must start with mqtt:// or mqtts://")
    scheme = scheme_text.lower()
    if scheme not in DEFAULT_PORTS:
        raise ConfigError(f"MQTT URL scheme {scheme_text!r} is not supported (use mqtt:// or mqtts://)")
    if rest.endswith("/"):
        rest = rest[:-1]
    if any(mark in rest for mark in "/?#"):
        raise ConfigError("MQTT URL must not have a path, query or fragment")
    userinfo, at_sign, hostport = rest.rpartition("@")
    username, password = _split_userinfo(userinfo) if at_sign else (None, None)
    host, port = _split_hostport(hostport, DEFAULT_PORTS[scheme])
    return BrokerUrl(
        scheme="mqtts" if scheme == "mqtts" else "mqtt",
        host=host,
        port=port,
        username=username,
        password=password,
    )


def _split_userinfo(userinfo: str) -> tuple[str, str | None]:
    raw_user, colon, raw_password = userinfo.partition(":")
    try:
        username = unquote(raw_user, errors="strict")
        password = unquote(raw_password, errors="strict") if colon else None
    except UnicodeDecodeError as exc:
        raise ConfigError("MQTT URL user or password has a percent-escape that is not UTF-8") from exc
    if not username:
        raise ConfigError("MQTT URL has an '@' but an empty user name")
    if _CONTROL.search(username):
        raise ConfigError("MQTT URL user name contains control characters")
    return username, password


def _split_hostport(hostport: str, default_port: int) -> tuple[str, int]:
    if hostport.startswith("["):
        closing = hostport.find("]")
        if closing < 0:
            raise ConfigError("MQTT URL has an unclosed '[' in the host")
        host_text, after = hostport[1:closing], hostport[closing + 1 :]
        if after and not after.startswith(":"):
            raise ConfigError("MQTT URL has text after the IPv6 address that is not a port")
        port_text = after[1:] if after else None
        host = _check_ipv6(host_text)
    else:
        host_text, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
        host = _check_host(host_text)
    return host, _check_port(port_text, default_port)


def _check_ipv6(text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError as exc:
        raise ConfigError(f"MQTT URL host [{text}] is not an IPv6 address") from exc


def _check_host(text: str) -> str:
    if not text:
        raise ConfigError("MQTT URL has an empty host")
    if len(text) > 253:
        raise ConfigError("MQTT URL host is longer than 253 characters")
    if re.fullmatch(r"[0-9.]+", text):
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError as exc:
            raise ConfigError(f"MQTT URL host {text!r} is not a valid IPv4 address") from exc
    if not all(_HOST_LABEL.match(label) for label in text.split(".")):
        raise ConfigError(f"MQTT URL host {text!r} is not a valid host name")
    return text.lower()


def _check_port(text: str | None, default_port: int) -> int:
    if text is None:
        return default_port
    if not _PORT_DIGITS.match(text):
        # The text is not echoed: in "mqtt://user:secret" (missing "@") it would be the password.
        raise ConfigError("MQTT URL port is not a number from 1 to 65535")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ConfigError(f"MQTT URL port {port} is outside 1-65535")
    return port
