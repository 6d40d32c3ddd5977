"""Bounded memory against any MQTT peer (issue 12 item 1): Maximum Packet Size and the client-side guard."""

from __future__ import annotations

import socket

import pytest
from paho.mqtt.packettypes import PacketTypes

from edged.fleet.dsse import MAX_ENVELOPE_BYTES
from edged.fleet.manifest import MAX_CHUNK_SIZE
from edged.mqtt.client_factory import BoundedClient, build_client, connect_properties
from edged.mqtt.settings import MqttSettings
from edged.mqtt_limits import max_inbound_packet


def test_connect_carries_maximum_packet_size_on_mqtt5_only() -> None:
    properties = connect_properties(True, 1_300_000)
    assert properties is not None and properties.packetType == PacketTypes.CONNECT
    assert properties.MaximumPacketSize == 1_300_000
    assert connect_properties(False, 1_300_000) is None
    assert connect_properties(True, None) is None


def test_the_limit_covers_every_legitimate_message_and_no_more() -> None:
    limit = max_inbound_packet(256 * 1024)
    assert limit > MAX_CHUNK_SIZE + 512 and limit > MAX_ENVELOPE_BYTES
    assert limit < 2 * 1024 * 1024  # a 50 MB publish is far over it
    assert max_inbound_packet(16 * 1024 * 1024) > 16 * 1024 * 1024  # a configured bigger request still fits


def test_built_client_refuses_to_read_an_oversized_packet() -> None:
    """A 3.1.1 broker ignores Maximum Packet Size: the client must not buffer a packet over the limit."""
    seen: list[int] = []
    client = build_client(MqttSettings(url="mqtt://127.0.0.1:1", protocol="3.1.1"), "t", None,
                          max_packet_bytes=1000, on_oversize=seen.append)
    assert isinstance(client, BoundedClient)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)  # as paho's own sockets are
    client._sock = ours  # type: ignore[assignment]  # paho reads from here
    # A PUBLISH header saying 50 MB follow (remaining length 52428800 as a variable byte integer).
    length, encoded = 50 * 1024 * 1024, bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (128 if length else 0))
        if not length:
            break
    theirs.sendall(bytes([0x30]) + bytes(encoded) + b"\x00" * 4096)
    try:
        rc = client._packet_read()
    finally:
        ours.close()
        theirs.close()
    assert rc != 0  # connection lost: paho closes and reconnects
    assert seen == [50 * 1024 * 1024]
    assert len(client._in_packet["packet"]) == 0  # not one body byte buffered


def test_a_packet_under_the_limit_is_read() -> None:
    client = build_client(MqttSettings(url="mqtt://127.0.0.1:1", protocol="3.1.1"), "t", None, max_packet_bytes=1000)
    ours, theirs = socket.socketpair()
    client._sock = ours  # type: ignore[assignment]
    theirs.sendall(bytes([0xD0, 0x00]))  # PINGRESP, remaining length 0
    try:
        assert client._packet_read() == 0
    finally:
        ours.close()
        theirs.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_unlimited_when_no_limit_is_given(protocol: str) -> None:
    client = build_client(MqttSettings(url="mqtt://127.0.0.1:1", protocol=protocol), "t", None)
    assert isinstance(client, BoundedClient) and client.max_packet_bytes is None


@pytest.mark.parametrize(("keepalive", "timeout"), [(5, 1.25), (60, 15.0), (600, 30.0)])
def test_the_network_thread_wakes_for_keepalive_only(keepalive: int, timeout: float) -> None:
    # paho's own 1 s select timeout woke an idle daemon every second; publishes wake it anyway.
    client = build_client(MqttSettings(url="mqtt://127.0.0.1:1", keepalive_s=keepalive), "t", None)
    assert client.loop_timeout_s == timeout  # type: ignore[attr-defined]
    assert client.loop_timeout_s < keepalive * 1.5 / 2  # type: ignore[attr-defined]  (PINGREQ in time)
