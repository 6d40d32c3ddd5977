"""Inbound side: topic rules, subscription matching, paho message conversion, the bounded AsyncInbox."""

from __future__ import annotations

import asyncio

import pytest
from paho.mqtt.client import MQTTMessage
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from edged.mqtt.connection import LinkCounters
from edged.mqtt.inbound import (
    AsyncInbox,
    InboundMessage,
    InvalidTopicError,
    Subscriptions,
    check_topic_filter,
    check_topic_name,
    inbound_from_paho,
)


def message(topic: str = "edged/d/req", payload: bytes = b"x") -> InboundMessage:
    return InboundMessage(topic=topic, payload=payload, qos=1)


@pytest.mark.parametrize("topic", ["", "a/+", "a/#", "#", "a\x00b", "x" * 70000])
def test_bad_topic_names(topic: str) -> None:
    with pytest.raises(InvalidTopicError):
        check_topic_name(topic)


@pytest.mark.parametrize("topic_filter", ["", "a/b#", "a/#/b", "a+/b", "a/++", "$share/", "$share//a", "$share/g"])
def test_bad_topic_filters(topic_filter: str) -> None:
    with pytest.raises(InvalidTopicError):
        check_topic_filter(topic_filter)


@pytest.mark.parametrize("topic_filter", ["#", "+", "a/+/c", "a/#", "+/+/#", "$share/workers/edged/+/req", "/a"])
def test_good_topic_filters(topic_filter: str) -> None:
    check_topic_filter(topic_filter)


def test_subscriptions_match_wildcards_and_shared_filters() -> None:
    subscriptions = Subscriptions()
    calls: list[str] = []
    subscriptions.add("edged/+/req", 1, lambda m: calls.append("plus"))
    subscriptions.add("$share/pool/edged/#", 1, lambda m: calls.append("shared"))
    subscriptions.add("other/#", 0, lambda m: calls.append("other"))
    for handler in subscriptions.handlers_for("edged/dev-1/req"):
        handler(message())
    assert sorted(calls) == ["plus", "shared"]
    assert len(subscriptions.handlers_for("edged/dev-1/req/extra")) == 1


def test_subscribing_again_replaces_and_remove_forgets() -> None:
    subscriptions = Subscriptions()
    subscriptions.add("a/b", 0, lambda m: None)
    subscriptions.add("a/b", 1, lambda m: None)
    assert subscriptions.filters() == [("a/b", 1)]
    assert subscriptions.remove("a/b")
    assert not subscriptions.remove("a/b")
    assert subscriptions.handlers_for("a/b") == []
    with pytest.raises(InvalidTopicError):
        subscriptions.add("a/b", 3, lambda m: None)


def paho_message(topic: bytes, properties: Properties | None) -> MQTTMessage:
    raw = MQTTMessage(mid=12, topic=topic)
    raw.payload = b"\x00sealed"
    raw.qos = 1
    raw.retain = 1  # paho fills these from header bits, as ints
    raw.dup = 0
    raw.properties = properties
    return raw


def test_mqtt5_properties_reach_the_handler() -> None:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = "edged/clients/c1/resp"
    properties.CorrelationData = b"\x01\x02"
    converted = inbound_from_paho(paho_message(b"edged/d/req", properties))
    assert converted.response_topic == "edged/clients/c1/resp"
    assert converted.correlation_data == b"\x01\x02"
    assert (converted.mid, converted.retain, converted.dup, converted.payload) == (12, True, False, b"\x00sealed")


def test_mqtt311_message_has_no_v5_fields() -> None:
    converted = inbound_from_paho(paho_message(b"edged/d/req", None))
    assert converted.response_topic is None and converted.correlation_data is None


def test_malformed_inbound_raises_for_the_link_to_drop() -> None:
    with pytest.raises(UnicodeDecodeError):
        inbound_from_paho(paho_message(b"edged/\xff", None))
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = ""
    with pytest.raises(ValidationError):
        inbound_from_paho(paho_message(b"edged/d/req", properties))


def test_inbox_drops_and_counts_when_full_without_blocking() -> None:
    counters = LinkCounters()

    async def scenario() -> tuple[list[bytes], int]:
        inbox = AsyncInbox(asyncio.get_running_loop(), maxsize=2, counters=counters)
        for index in range(5):  # as paho's thread would: the loop is not consuming yet
            inbox(message(payload=bytes([index])))
        received = [(await inbox.get()).payload for _ in range(2)]
        inbox(message(payload=b"after"))  # room again after consuming
        received.append((await inbox.get()).payload)
        return received, inbox.dropped

    received, dropped = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert received == [b"\x00", b"\x01", b"after"]
    assert dropped == 3
    assert counters.get("dropped_inbound") == 3


def test_inbox_of_a_closed_loop_drops() -> None:
    loop = asyncio.new_event_loop()
    inbox = AsyncInbox(loop, maxsize=4)
    loop.close()
    inbox(message())
    assert inbox.dropped == 1


def test_inbox_is_bounded_in_bytes_as_well_as_in_messages() -> None:
    async def scenario() -> tuple[list[int], int, int]:
        inbox = AsyncInbox(asyncio.get_running_loop(), maxsize=1000, max_bytes=10_000)
        for _ in range(5):
            inbox(message(payload=b"x" * 4000))  # only two fit in 10,000 bytes
        waiting = inbox.waiting_bytes
        sizes = [len((await inbox.get()).payload) for _ in range(2)]
        inbox(message(payload=b"y" * 9000))  # room again
        sizes.append(len((await inbox.get()).payload))
        return sizes, inbox.dropped, waiting

    sizes, dropped, waiting = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert sizes == [4000, 4000, 9000]
    assert dropped == 3 and waiting == 8000


def test_inbox_max_bytes_must_be_positive() -> None:
    with pytest.raises(Exception, match="max_bytes"):
        AsyncInbox(asyncio.new_event_loop(), maxsize=1, max_bytes=0)
