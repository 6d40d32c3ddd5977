"""Connection bookkeeping of the MQTT link: thread-safe counters, reconnect delays (full jitter, a long
wait after refused credentials), connection state and rate-limited logs."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Literal, get_args

import structlog
from paho.mqtt.reasoncodes import ReasonCode

from edged.errors import ConfigError

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


class ReconnectBackoff:
    """Delay before the next connection attempt.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the n-th delay is
    uniform in [min_s, min(max_s, min_s * 2**(n+1))], so a fleet that lost its broker at the same
    moment does not come back in lock step. The first cap is already 2 * min_s for that reason.
    """

    def __init__(self, min_s: float, max_s: float, auth_retry_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ConfigError("reconnect backoff needs 0 < min_s <= max_s")
        self._min_s = min_s
        self._max_s = max_s
        self._auth_retry_s = auth_retry_s
        self._rng = rng if rng is not None else random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Attempts that failed since the last reset."""
        return self._failures

    @property
    def auth_retry_s(self) -> float:
        return self._auth_retry_s

    def next_delay(self) -> float:
        """The delay after one more failed or lost connection."""
        # The exponent is capped so a week-long outage cannot overflow the float.
        cap = min(self._max_s, self._min_s * 2.0 ** min(self._failures + 1, 60))
        self._failures += 1
        return self._rng.uniform(self._min_s, cap)

    def auth_delay(self) -> float:
        """The delay after the broker refused our credentials or banned us."""
        self._failures += 1
        return self._auth_retry_s

    def reset(self) -> None:
        """The connection proved stable: start again from the smallest delay."""
        self._failures = 0


logger = structlog.get_logger(__name__)

# A connection must last this long before the backoff starts again from its minimum, so a broker
# that accepts and then drops us at once (a client-id fight, a quota) is not hit twice a second.
STABLE_CONNECTION_S = 10.0
# CONNACK reasons that retrying soon cannot fix: bad user name or password (0x86, v3 rc 4),
# not authorised (0x87, v3 rc 5), banned (0x8A), bad authentication method (0x8C).
AUTH_REFUSALS = frozenset({0x86, 0x87, 0x8A, 0x8C})


@dataclass(frozen=True)
class LinkEvent:
    """What the owner's on_connect / on_disconnect hook is told."""

    connects: int  # accepted connections so far, 1 on the first: usable as a birth sequence
    reason: str  # the broker's or paho's reason text
    session_present: bool = False


class ConnectionSupervisor:
    """Turns the events paho reports into state, counters, one log line per episode, and delays.

    Called only from paho's network thread, so it needs no lock; readers only read a bool.
    Each method that ends an attempt returns the delay before the next one.
    """

    def __init__(self, backoff: ReconnectBackoff, counters: LinkCounters, client_id: str, broker: str) -> None:
        self._backoff = backoff
        self._counters = counters
        self._client_id = client_id
        self._broker = broker
        self.connected = False
        self._connected_at = 0.0
        self._refusal: ReasonCode | None = None  # CONNACK refusal of the current attempt
        self._auth_error_logged = False
        self._failure_streak = 0

    def attempt_started(self) -> None:
        self._refusal = None
        self._counters.bump("connect_attempts")

    def connack(self, reason_code: ReasonCode, session_present: bool) -> LinkEvent | None:
        """Record a CONNACK; the event for the owner's hook when it was accepted, else None."""
        if reason_code.is_failure:
            self._record_refusal(reason_code)
            return None
        self.connected = True
        self._connected_at = time.monotonic()
        self._auth_error_logged = False
        self._counters.bump("connects")
        logger.info("mqtt connected", client_id=self._client_id, failed_attempts_before=self._failure_streak)
        self._failure_streak = 0
        return LinkEvent(self._counters.get("connects"), str(reason_code), session_present)

    def connect_failed(self) -> float:
        """The TCP or TLS connection could not be opened; returns the delay before retrying."""
        self._record_failure("mqtt connection failed", None)
        return self._next_delay()

    def connection_closed(self, reason_code: ReasonCode, stopping: bool) -> tuple[LinkEvent | None, float]:
        """The socket closed: the owner's event if a connection had been up, and the retry delay."""
        event = None
        if self.connected:
            self.connected = False
            self._counters.bump("disconnects")
            if time.monotonic() - self._connected_at >= STABLE_CONNECTION_S:
                self._backoff.reset()
            log = logger.info if stopping else logger.warning
            log("mqtt disconnected", reason=str(reason_code), client_id=self._client_id)
            event = LinkEvent(self._counters.get("connects"), str(reason_code))
        elif self._refusal is None and not stopping:
            # TLS 1.3: a broker that rejects our certificate closes the socket after connect().
            self._record_failure("mqtt broker closed the connection before CONNACK", reason_code)
        return event, self._next_delay()

    def _next_delay(self) -> float:
        if self._refusal is not None and self._refusal.value in AUTH_REFUSALS:
            return self._backoff.auth_delay()
        return self._backoff.next_delay()

    def _record_failure(self, event: str, reason_code: ReasonCode | None) -> None:
        self._counters.bump("connect_failures")
        self._failure_streak += 1
        log = logger.warning if self._failure_streak == 1 else logger.debug
        reason = str(reason_code) if reason_code is not None else None
        log(event, broker=self._broker, reason=reason, streak=self._failure_streak)

    def _record_refusal(self, reason_code: ReasonCode) -> None:
        self._refusal = reason_code
        if reason_code.value not in AUTH_REFUSALS:
            self._record_failure("mqtt broker refused the connection", reason_code)
            return
        self._counters.bump("connect_failures")
        self._counters.bump("auth_failures")
        self._failure_streak += 1
        if self._auth_error_logged:
            logger.debug("mqtt credentials refused again", streak=self._failure_streak)
            return
        self._auth_error_logged = True  # once until a connect succeeds: no log storm either
        logger.error(
            "mqtt broker refused the credentials; retrying slowly",
            reason=str(reason_code),
            broker=self._broker,
            client_id=self._client_id,
            retry_in_s=round(self._backoff.auth_retry_s, 1),
        )
