"""Thread-safe counters of what the MQTT link did, for telemetry and tests."""

from __future__ import annotations

import threading
from typing import Literal, get_args

CounterName = Literal[
    "connect_attempts",  # TCP/TLS connections started (each CONNECT try)
    "connects",  # CONNACK accepted
    "connect_failures",  # attempts that did not end in an accepted CONNACK
    "auth_failures",  # CONNACK refused for credentials, authorisation or a ban
    "disconnects",  # established connections that ended (lost or closed)
    "dropped_inbound",  # messages dropped because an inbox was full or unreadable
    "oversize_inbound",  # packets over max_packet_bytes: the connection was closed before reading them
    "handler_errors",  # exceptions raised by inbound handlers (logged and swallowed)
    "publish_failures",  # publishes refused locally, refused by the broker, or lost at stop
    "callback_errors",  # exceptions inside the link's own paho callbacks (a bug if non-zero)
]
COUNTER_NAMES: tuple[str, ...] = get_args(CounterName)


class LinkCounters:
    """Monotonic counters, bumped from paho's network thread and read from anywhere."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)

    def bump(self, name: CounterName, amount: int = 1) -> None:
        with self._lock:
            self._values[name] += amount

    def get(self, name: CounterName) -> int:
        with self._lock:
            return self._values[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
