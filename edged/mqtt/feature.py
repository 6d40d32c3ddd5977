"""MqttFeature: the one shape of everything that rides on the broker connection.

A feature's constructor only stores its arguments (no I/O); ``start(link)`` subscribes and starts
its tasks; ``stop()`` cancels them. ``subscribe`` gives each subscription a bounded inbox (paho's
thread never blocks, a flood is dropped and counted by the link) and a reader task that survives
any one message (after zigbee2mqtt's Extension base, lib/extension/extension.ts).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Protocol

import structlog

from edged.mqtt.inbound import AsyncInbox, InboundHandler, InboundMessage
from edged.mqtt.publishing import PublishHandle

logger = structlog.get_logger(__name__)

MessageHandler = Callable[[InboundMessage], Awaitable[None] | None]


class LinkPort(Protocol):
    """The part of ``MqttLink`` a feature uses."""

    @property
    def is_connected(self) -> bool: ...
    def inbox(self, loop: asyncio.AbstractEventLoop, maxsize: int, max_bytes: int = ...) -> AsyncInbox: ...
    def subscribe(self, topic_filter: str, qos: int, handler: InboundHandler) -> None: ...
    def unsubscribe(self, topic_filter: str) -> None: ...
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                response_topic: str | None = None, correlation_data: bytes | None = None,
                expiry_s: int | None = None) -> PublishHandle: ...


class MqttFeature:
    """Base of the MQTT features (requests, commands, presence, telemetry, updates)."""

    name = "mqtt-feature"

    def __init__(self) -> None:
        self._link: LinkPort | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def link(self) -> LinkPort:
        if self._link is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._link

    async def start(self, link: LinkPort) -> None:
        """Subclasses subscribe and spawn here, after calling ``super().start(link)``."""
        self._link = link

    async def stop(self) -> None:
        """Cancel every task this feature started and wait for them."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def subscribe(self, topics: str | Iterable[str], qos: int, maxsize: int, handle: MessageHandler) -> AsyncInbox:
        """Subscribe ``topics`` to one bounded inbox read by ``handle`` on a guarded task."""
        inbox = self.inbox(maxsize)
        for topic in [topics] if isinstance(topics, str) else topics:
            self.link.subscribe(topic, qos, inbox)
        self.spawn(self._read_forever(inbox, handle), f"{self.name}-reader")
        return inbox

    def inbox(self, maxsize: int, max_bytes: int | None = None) -> AsyncInbox:
        """A bounded inbox without a reader (the feature pulls from it itself); ``max_bytes`` of payload."""
        if max_bytes is None:
            return self.link.inbox(asyncio.get_running_loop(), maxsize)
        return self.link.inbox(asyncio.get_running_loop(), maxsize, max_bytes)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """A task that ``stop()`` cancels; it leaves the set when it ends."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_forever(self, inbox: AsyncInbox, handle: MessageHandler) -> None:
        while True:
            message = await inbox.get()
            try:
                result = handle(message)
                if inspect.isawaitable(result):
                    await result
            except Exception:  # one message must never stop the reader
                logger.exception("mqtt message handling failed", feature=self.name, topic=message.topic)
