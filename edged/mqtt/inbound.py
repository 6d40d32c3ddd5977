"""Incoming messages: the typed message, topic checks, the subscription table, the asyncio inbox."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog
from paho.mqtt.client import MQTTMessage, topic_matches_sub
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field

from edged.errors import ConfigError, InvalidTopicError
from edged.mqtt.connection import LinkCounters
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

MAX_TOPIC_BYTES = 65535
_SHARED_PREFIX = "$share/"


class InboundMessage(StrictModel):
    """One message from the broker, as handlers see it (MQTT 5 fields are None on 3.1.1)."""

    topic: str = Field(min_length=1, max_length=MAX_TOPIC_BYTES, description="Topic it was published to")
    payload: bytes = Field(max_length=268_435_455, description="Raw payload bytes")
    qos: int = Field(ge=0, le=2, description="QoS it was delivered with")
    response_topic: str | None = Field(
        default=None, min_length=1, max_length=MAX_TOPIC_BYTES, description="MQTT 5 Response Topic"
    )
    correlation_data: bytes | None = Field(default=None, max_length=65535, description="MQTT 5 Correlation Data")
    dup: bool = Field(default=False, description="The broker resent it (QoS 1): it may be a duplicate")
    mid: int = Field(default=0, ge=0, le=65535, description="Packet id (0 for QoS 0)")
    retain: bool = Field(default=False, description="A retained message sent on subscribe")


InboundHandler = Callable[[InboundMessage], None]


def inbound_from_paho(message: MQTTMessage) -> InboundMessage:
    """The typed view of a paho message; raises UnicodeDecodeError or ValidationError if malformed."""
    properties = message.properties
    response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
    correlation_data = getattr(properties, "CorrelationData", None) if properties is not None else None
    return InboundMessage(
        topic=message.topic,
        payload=bytes(message.payload),
        qos=message.qos,
        response_topic=response_topic,
        correlation_data=bytes(correlation_data) if correlation_data is not None else None,
        dup=bool(message.dup),
        mid=message.mid,
        retain=bool(message.retain),
    )


def check_topic_name(topic: str) -> None:
    """A topic to publish to: not empty, no wildcards, no NUL, at most 65535 UTF-8 bytes."""
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise InvalidTopicError(f"{topic!r} is not a valid topic to publish to")
    if len(topic.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise InvalidTopicError("topic is longer than 65535 bytes")


def check_topic_filter(topic_filter: str) -> None:
    """A filter to subscribe to: '+' fills a whole level, '#' only as the whole last level."""
    if not topic_filter or "\x00" in topic_filter:
        raise InvalidTopicError(f"{topic_filter!r} is not a valid topic filter")
    if len(topic_filter.encode("utf-8")) > MAX_TOPIC_BYTES:
        raise InvalidTopicError("topic filter is longer than 65535 bytes")
    levels = _unshared(topic_filter).split("/")
    for index, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and level != "#"):
            raise InvalidTopicError(f"{topic_filter!r}: a wildcard must fill a whole level")
        if level == "#" and index != len(levels) - 1:
            raise InvalidTopicError(f"{topic_filter!r}: '#' must be the last level")


def _unshared(topic_filter: str) -> str:
    """``$share/group/a/b`` matches like ``a/b``."""
    if topic_filter.startswith(_SHARED_PREFIX):
        _group, _, rest = topic_filter[len(_SHARED_PREFIX) :].partition("/")
        if not _group or not rest:
            raise InvalidTopicError(f"{topic_filter!r} is not a valid shared subscription")
        return rest
    return topic_filter


class Subscriptions:
    """Filter → (QoS, handler); the whole table is sent again on every (re)connect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[int, str, InboundHandler]] = {}
        self._awaiting_suback: dict[int, list[str]] = {}

    def add(self, topic_filter: str, qos: int, handler: InboundHandler) -> None:
        check_topic_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise InvalidTopicError(f"QoS {qos} is not 0, 1 or 2")
        with self._lock:
            self._entries[topic_filter] = (qos, _unshared(topic_filter), handler)

    def remove(self, topic_filter: str) -> bool:
        with self._lock:
            return self._entries.pop(topic_filter, None) is not None

    def filters(self) -> list[tuple[str, int]]:
        with self._lock:
            return [(topic_filter, qos) for topic_filter, (qos, _, _) in self._entries.items()]

    def handlers_for(self, topic: str) -> list[InboundHandler]:
        with self._lock:
            entries = list(self._entries.values())
        return [handler for _, match_filter, handler in entries if topic_matches_sub(match_filter, topic)]

    def sent(self, mid: int, filters: list[str]) -> None:
        """A SUBSCRIBE for ``filters`` went out as packet ``mid``."""
        with self._lock:
            self._awaiting_suback[mid] = filters

    def acknowledged(self, mid: int, reason_codes: list[ReasonCode]) -> None:
        """Log each filter the broker refused (an ACL, a bad shared name); they are retried on reconnect."""
        with self._lock:
            filters = self._awaiting_suback.pop(mid, [])
        for index, reason_code in enumerate(reason_codes):
            if reason_code.is_failure:
                topic_filter = filters[index] if index < len(filters) else None
                logger.warning("mqtt broker refused a subscription", topic_filter=topic_filter, reason=str(reason_code))

    def forget_sent(self) -> None:
        """The connection closed: SUBACKs still awaited will never come."""
        with self._lock:
            self._awaiting_suback.clear()


class AsyncInbox:
    """A handler that hands messages from paho's thread to one asyncio loop, bounded.

    When ``maxsize`` messages or ``max_bytes`` payload bytes are waiting, new ones are dropped
    and counted: the network thread never blocks (a blocked network thread misses keepalives
    and PUBACKs). The bounds count messages already scheduled onto the loop too, so a stalled
    loop cannot grow memory.
    Use it as ``link.subscribe(filter, 1, inbox)`` and ``msg = await inbox.get()``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int, counters: LinkCounters | None = None,
                 max_bytes: int | None = None) -> None:
        if maxsize < 1 or (max_bytes is not None and max_bytes < 1):
            raise ConfigError("AsyncInbox maxsize and max_bytes must be at least 1")
        self._loop = loop
        self._maxsize = maxsize
        self._max_bytes = max_bytes
        self._bytes = 0
        self._counters = counters
        self._lock = threading.Lock()
        self._waiting = 0
        self._dropped = 0
        self._queue: asyncio.Queue[InboundMessage] = asyncio.Queue()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def waiting_bytes(self) -> int:
        return self._bytes

    def __call__(self, message: InboundMessage) -> None:
        size = len(message.payload)
        with self._lock:
            accepted = self._waiting < self._maxsize and (
                self._max_bytes is None or self._bytes + size <= self._max_bytes)
            if accepted:
                self._waiting += 1
                self._bytes += size
        if accepted:
            try:
                self._loop.call_soon_threadsafe(self._queue.put_nowait, message)
                return
            except RuntimeError:  # the loop is closed
                with self._lock:
                    self._waiting -= 1
                    self._bytes -= size
        self._record_drop(message.topic)

    async def get(self) -> InboundMessage:
        message = await self._queue.get()
        with self._lock:
            self._waiting -= 1
            self._bytes -= len(message.payload)
        return message

    def _record_drop(self, topic: str) -> None:
        with self._lock:
            self._dropped += 1
            dropped = self._dropped
        if self._counters is not None:
            self._counters.bump("dropped_inbound")
        if dropped == 1 or dropped % 100 == 0:  # a flood must not become a log flood
            logger.warning(
                "mqtt inbox full, dropped a message", topic=topic, dropped_total=dropped, maxsize=self._maxsize,
                max_bytes=self._max_bytes,
            )
