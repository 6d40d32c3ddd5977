"""What a hostile broker peer can still send (issue 12): huge publishes on every topic a device subscribes to."""

from __future__ import annotations

import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edged.errors import TransportError

from edged.topics import DeviceTopics, channel_offer_topic
from tests.integration.test_mqtt_daemon import BODY, DEVICE, answer_text, asker, provision
from tests.mosquitto import Mosquitto, mosquitto_plain  # noqa: F401

pytestmark = pytest.mark.slow
FLOOD_BYTES = 50 * 1024 * 1024
FLOODS_PER_TOPIC = 3
RSS_GROWTH_LIMIT = 20 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """VmHWM: the highest resident set the process ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def flood(broker: Mosquitto, topics: list[str]) -> None:
    """Publish FLOODS_PER_TOPIC payloads of 50 MB to each topic, one at a time, each acknowledged by the broker."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder", protocol=mqtt.MQTTv5)
    acked = threading.Semaphore(0)
    client.on_publish = lambda *args: acked.release()
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        junk = b"\x00" * FLOOD_BYTES
        for topic in topics:
            for _ in range(FLOODS_PER_TOPIC):
                client.publish(topic, junk, qos=1)
                assert acked.acquire(timeout=120), f"broker did not acknowledge a flood on {topic}"
    finally:
        client.disconnect()
        client.loop_stop()


def answer_eventually(client) -> str:
    """On 3.1.1 the device closes the connection on each flood and reconnects: a request sent
    while it is away is lost (clean session), so ask again until one is answered."""
    for _ in range(20):
        try:
            return answer_text(list(client.ask(BODY, timeout=15)))
        except TransportError:
            continue
    raise AssertionError("the device never answered after the floods")


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_huge_publishes_on_every_subscribed_topic_do_not_grow_memory(make_daemon, tmp_path, mosquitto_plain,
                                                                     protocol):
    broker = mosquitto_plain
    env = {"EDGED_MQTT__URL": broker.url, "EDGED_MQTT__PROTOCOL": f'"{protocol}"', "EDGED_MQTT__BACKOFF_MIN_S": "0.1",
           "EDGED_MQTT__BACKOFF_MAX_S": "0.5", "EDGED_UPDATES__CHANNELS": '["stable"]',
           "EDGED_UPDATES__CLOCK_POLICY": "trust-system-clock"}
    d, identity, key = provision(make_daemon, tmp_path, env)
    d.start()
    topics = DeviceTopics("edged", DEVICE)
    subscribed = [topics.request, topics.commands, topics.update_offer, topics.update_chunks,
                  channel_offer_topic("edged", "default", "stable")]
    with asker(broker, identity, key) as client:
        assert answer_text(list(client.ask(BODY))).strip()  # warm: the model, the KV cache, the crypto
        before = peak_rss(d.proc.pid)
        flood(broker, subscribed)
        # Published after every flood was acknowledged: once answered, the broker has delivered or
        # dropped every flood for the device.
        assert answer_eventually(client).strip()
        grown = peak_rss(d.proc.pid) - before
    assert grown < RSS_GROWTH_LIMIT, f"peak RSS grew by {grown / 1e6:.1f} MB"
    assert d.proc.poll() is None
    assert d.stop() == 0
