"""MqttFeature: bounded inboxes, a reader that survives any one message, and stop() that ends every task."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.mqtt.feature import MqttFeature
from edged.mqtt.inbound import AsyncInbox, InboundMessage


class FakeLink:
    is_connected = True

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def inbox(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> AsyncInbox:
        return AsyncInbox(loop, maxsize)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> None:
        self.handlers[topic_filter] = handler

    def unsubscribe(self, topic_filter: str) -> None:
        self.handlers.pop(topic_filter, None)

    def publish(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("not used")


class Echo(MqttFeature):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bytes] = []
        self.inbox_ref: AsyncInbox | None = None

    async def start(self, link: Any) -> None:
        await super().start(link)
        self.inbox_ref = self.subscribe(["a/#", "b"], 1, 3, self.handle)

    async def handle(self, message: InboundMessage) -> None:
        if message.payload == b"boom":
            raise RuntimeError("handler bug")
        self.seen.append(message.payload)


def test_a_raising_handler_does_not_stop_the_reader_and_the_inbox_is_bounded() -> None:
    async def main() -> tuple[Echo, int, list[dict[str, Any]]]:
        link, feature = FakeLink(), Echo()
        await feature.start(link)
        assert sorted(link.handlers) == ["a/#", "b"] and link.handlers["a/#"] is link.handlers["b"]
        deliver = link.handlers["b"]
        with capture_logs() as logs:
            for payload in (b"one", b"boom", b"two"):
                deliver(InboundMessage(topic="b", payload=payload, qos=1))
            deliver(InboundMessage(topic="b", payload=b"dropped", qos=1))  # a fourth waiting message: over the bound
            while len(feature.seen) < 2:
                await asyncio.sleep(0.01)
        dropped = feature.inbox_ref.dropped  # type: ignore[union-attr]
        await feature.stop()
        return feature, dropped, logs

    feature, dropped, logs = asyncio.run(asyncio.wait_for(main(), 10))
    assert feature.seen == [b"one", b"two"] and dropped == 1
    failure = next(entry for entry in logs if entry["event"] == "mqtt message handling failed")
    assert failure["feature"] == "echo" and failure["topic"] == "b"
    assert not feature._tasks


def test_a_feature_that_is_not_started_says_so() -> None:
    with pytest.raises(RuntimeError, match="echo is not started"):
        _ = Echo().link
