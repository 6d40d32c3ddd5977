"""A tiny observer on a test broker: collects messages on topic filters, waits for one that matches."""

from __future__ import annotations

import json
import queue
import time
from typing import Any, Callable

from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from tests.slowdown import scaled


class Probe:
    def __init__(self, settings: MqttSettings, *filters: str, client_id: str = "probe") -> None:
        self.messages: queue.Queue[InboundMessage] = queue.Queue()
        self.seen: list[InboundMessage] = []
        self.link = MqttLink(settings, client_id=client_id)
        for topic_filter in filters:
            self.link.subscribe(topic_filter, 1, self.messages.put)

    def __enter__(self) -> "Probe":
        self.link.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.link.stop()

    def wait_for(self, predicate: Callable[[InboundMessage], bool], what: str, timeout: float = 30.0,
                 watch: Any = None) -> InboundMessage:
        """The first message that matches; with `watch` (a tests.daemon.DaemonProcess) the wait fails at
        once, with the daemon's log, when that daemon exits instead of sitting out the timeout."""
        for message in self.seen:
            if predicate(message):
                return message
        end = time.monotonic() + scaled(timeout)
        while True:
            if watch is not None:
                watch.check_alive()
            try:
                message = self.messages.get(timeout=min(0.2, max(0.0, end - time.monotonic())))
            except queue.Empty:
                if time.monotonic() < end:
                    continue
                raise AssertionError(f"gave up waiting for {what}; saw {[m.topic for m in self.seen][-20:]}") from None
            self.seen.append(message)
            if predicate(message):
                return message

    def drain(self) -> list[InboundMessage]:
        while True:
            try:
                self.seen.append(self.messages.get_nowait())
            except queue.Empty:
                return self.seen


def status_is(topic: str, state: str) -> Callable[[InboundMessage], bool]:
    def check(message: InboundMessage) -> bool:
        return message.topic == topic and json.loads(message.payload).get("state") == state
    return check


def payload(message: InboundMessage) -> dict[str, Any]:
    return json.loads(message.payload)
