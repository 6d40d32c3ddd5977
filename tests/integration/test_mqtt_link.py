"""MqttLink against a real mosquitto: round trips, TLS, credentials, outages, will, clean stop, overload."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import structlog
from structlog.testing import LogCapture

from edged.mqtt.inbound import InboundMessage
from edged.mqtt.connection import LinkEvent
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.mqtt.publishing import StatusMessage
from edged.mqtt import connection as supervisor_module
from tests.mosquitto import Mosquitto, free_port, mosquitto_acl, mosquitto_plain, mosquitto_tls  # noqa: F401
from tests.slowdown import scaled

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WAIT_S = scaled(15.0)  # generous bound for slow CI; tests finish as soon as the condition holds
T = TypeVar("T")
MakeLink = Callable[..., MqttLink]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 60))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def settings_for(broker: Mosquitto, **fields: Any) -> MqttSettings:
    values: dict[str, Any] = {"url": broker.url, "backoff_min_s": 0.05, "backoff_max_s": 0.3, "keepalive_s": 10}
    if broker.tls is not None:
        values |= {
            "tls_ca_file": str(broker.tls.ca_cert),
            "tls_cert_file": str(broker.tls.client_cert),
            "tls_key_file": str(broker.tls.client_key),
        }
    return MqttSettings.model_validate(values | fields)


@pytest.fixture
def make_link() -> Iterator[MakeLink]:
    """Links that the test starts itself; all are stopped at the end."""
    links: list[MqttLink] = []

    def make(settings: MqttSettings, **kwargs: Any) -> MqttLink:
        link = MqttLink(settings, client_id=kwargs.pop("client_id", f"test-{uuid.uuid4().hex[:8]}"), **kwargs)
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop(timeout=1.0)


class Collector:
    """A handler that keeps what it gets, thread-safely, for the test thread to wait on."""

    def __init__(self) -> None:
        self._unread: queue.Queue[InboundMessage] = queue.Queue()
        self._lock = threading.Lock()
        self._payloads: list[bytes] = []

    def __call__(self, message: InboundMessage) -> None:
        with self._lock:
            self._payloads.append(message.payload)
        self._unread.put(message)

    def next(self, timeout: float = WAIT_S) -> InboundMessage:
        return self._unread.get(timeout=timeout)

    def payloads(self) -> list[bytes]:
        """Everything received so far, read or not."""
        with self._lock:
            return list(self._payloads)


def sync_subscriptions(link: MqttLink) -> None:
    """Return once the broker has applied every SUBSCRIBE the link sent so far.

    The broker handles one client's packets in order, so a probe published after subscribing to
    it comes back only after the earlier subscriptions are in place.
    """
    probe = f"probe/{uuid.uuid4().hex}"
    collector = Collector()
    link.subscribe(probe, 1, collector)
    link.publish(probe, b"probe", qos=1)
    assert collector.next().payload == b"probe"
    link.unsubscribe(probe)


def start_and_sync(link: MqttLink) -> MqttLink:
    """Start, wait for the connection and for the subscriptions to be in place."""
    link.start()
    wait_until(lambda: link.is_connected, f"{link.client_id} to connect")
    sync_subscriptions(link)
    return link


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_round_trip_with_puback(mosquitto_plain: Mosquitto, make_link: MakeLink, protocol: str) -> None:
    device = make_link(settings_for(mosquitto_plain, protocol=protocol))
    client = make_link(settings_for(mosquitto_plain, protocol=protocol))

    async def scenario() -> InboundMessage:
        inbox = device.inbox(asyncio.get_running_loop(), maxsize=8)
        device.subscribe("edged/dev-1/req", 1, inbox)
        device.start()
        client.start()
        await asyncio.to_thread(wait_until, lambda: device.is_connected and client.is_connected, "both connected")
        await asyncio.to_thread(sync_subscriptions, device)
        handle = client.publish(
            "edged/dev-1/req", b"\x00sealed", qos=1,
            response_topic="edged/clients/c1/resp", correlation_data=b"\x01\x02", expiry_s=60,
        )
        assert await handle.acked(timeout=WAIT_S)
        return await asyncio.wait_for(inbox.get(), WAIT_S)

    received = run(scenario())
    assert (received.topic, received.payload, received.qos) == ("edged/dev-1/req", b"\x00sealed", 1)
    if protocol == "5":
        assert (received.response_topic, received.correlation_data) == ("edged/clients/c1/resp", b"\x01\x02")
    else:
        assert (received.response_topic, received.correlation_data) == (None, None)
    assert client.counters.get("publish_failures") == 0


def test_mutual_tls_with_client_certificate(mosquitto_tls: Mosquitto, make_link: MakeLink) -> None:
    link = make_link(settings_for(mosquitto_tls))
    collector = Collector()
    link.subscribe("edged/device-1/status", 1, collector)
    start_and_sync(link)
    assert link.publish("edged/device-1/status", b"online", qos=1).wait(WAIT_S)
    assert collector.next().payload == b"online"
    assert "u'device-1'" in mosquitto_tls.log_text()  # the certificate's CN became the user name


def test_tls_without_client_certificate_is_refused(mosquitto_tls: Mosquitto, make_link: MakeLink) -> None:
    assert mosquitto_tls.tls is not None
    settings = MqttSettings.model_validate(
        {"url": mosquitto_tls.url, "tls_ca_file": str(mosquitto_tls.tls.ca_cert), "backoff_min_s": 0.05}
    )
    link = make_link(settings)
    link.start()
    wait_until(lambda: link.counters.get("connect_failures") >= 2, "two failed TLS attempts")
    assert link.counters.get("connects") == 0
    assert not link.is_connected


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_logs_once_and_retries_slowly(
    mosquitto_acl: Mosquitto, make_link: MakeLink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: str
) -> None:
    capture = LogCapture()
    monkeypatch.setattr(supervisor_module, "logger", structlog.wrap_logger(None, processors=[capture]))
    (tmp_path / "wrong").write_text("not-the-password\n")
    # backoff_min_s 0.05: without the slow path this would make 10-20 attempts a second.
    wrong = settings_for(mosquitto_acl, username="device-1", password_file=str(tmp_path / "wrong"), protocol=protocol)
    link = make_link(wrong)
    link.start()
    wait_until(lambda: link.counters.get("auth_failures") >= 1, "the refusal")
    time.sleep(0.7)  # a storm would show up here as more attempts
    counts = link.counters.snapshot()
    assert (counts["connect_attempts"], counts["auth_failures"], counts["connects"]) == (1, 1, 0)
    assert [entry["event"] for entry in capture.entries if entry["log_level"] == "error"] == [
        "mqtt broker refused the credentials; retrying slowly"
    ]


def test_acl_refuses_a_foreign_topic_with_a_failed_handle(
    mosquitto_acl: Mosquitto, make_link: MakeLink, tmp_path: Path
) -> None:
    user = mosquitto_acl.user("device-1")
    (tmp_path / "pw").write_text(user.password)
    link = make_link(settings_for(mosquitto_acl, username=user.name, password_file=f"{tmp_path}/pw"))
    link.start()  # no start_and_sync: its probe topic is outside this user's ACL
    wait_until(lambda: link.is_connected, "authenticated connection")
    assert link.publish("edged/device-1/telemetry", b"{}", qos=1).wait(WAIT_S)
    denied = link.publish("edged/device-2/req", b"{}", qos=1)
    assert not denied.wait(WAIT_S)
    assert denied.failure == "Not authorized"
    assert link.counters.get("publish_failures") == 1


def test_broker_restart_reconnects_resubscribes_and_flushes_the_queue(
    mosquitto_plain: Mosquitto, make_link: MakeLink
) -> None:
    connected: queue.Queue[LinkEvent] = queue.Queue()
    link = make_link(settings_for(mosquitto_plain), on_connect=connected.put)
    collector = Collector()
    link.subscribe("edged/dev-1/cmd/#", 1, collector)
    link.start()
    assert connected.get(timeout=WAIT_S).connects == 1

    mosquitto_plain.stop()
    wait_until(lambda: not link.is_connected, "the link to notice the outage")
    offline = link.publish("edged/dev-1/cmd/queued", b"sent while offline", qos=1)  # must not raise
    assert not offline.done
    mosquitto_plain.start()  # same port

    assert connected.get(timeout=WAIT_S).connects == 2
    assert offline.wait(WAIT_S), offline.failure
    sync_subscriptions(link)
    sender = start_and_sync(make_link(settings_for(mosquitto_plain)))
    assert sender.publish("edged/dev-1/cmd/after", b"after restart", qos=1).wait(WAIT_S)
    wait_until(lambda: b"after restart" in collector.payloads(), "the message published after the restart")
    assert b"sent while offline" in collector.payloads()
    assert link.counters.get("disconnects") == 1


# The will is made by a factory before each attempt, so it can carry the attempt number.
CHILD = """
import itertools, sys, time
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.mqtt.publishing import StatusMessage
url, topic = sys.argv[1], sys.argv[2]
attempts = itertools.count(1)
link = MqttLink(MqttSettings(url=url, backoff_min_s=0.05), client_id="will-child",
                will=lambda: StatusMessage(topic=topic, payload=b"offline %d" % next(attempts)),
                on_connect=lambda event: link.publish(topic, b"online", retain=True))
link.start()
time.sleep(120)
"""


def test_will_is_published_when_the_process_is_killed(mosquitto_plain: Mosquitto, make_link: MakeLink) -> None:
    status = "edged/will-child/status"
    observer = make_link(settings_for(mosquitto_plain))
    collector = Collector()
    observer.subscribe(status, 1, collector)
    start_and_sync(observer)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, mosquitto_plain.url, status], cwd=REPO, env=env)
    try:
        assert collector.next().payload == b"online"
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT_S)
        will = collector.next()
        assert (will.topic, will.payload) == (status, b"offline 1")
    finally:
        child.kill()
        child.wait(WAIT_S)


def test_clean_stop_publishes_final_message_and_no_will(mosquitto_plain: Mosquitto, make_link: MakeLink) -> None:
    status = "edged/dev-1/status"
    observer = make_link(settings_for(mosquitto_plain))
    collector = Collector()
    observer.subscribe(status, 1, collector)
    start_and_sync(observer)
    will = StatusMessage(topic=status, payload=b"offline")
    device = start_and_sync(make_link(settings_for(mosquitto_plain), will=will))
    device.stop(final_messages=[StatusMessage(topic=status, payload=b"stopped")], timeout=WAIT_S)
    assert not device.is_connected
    assert collector.next().payload == b"stopped"
    sync_subscriptions(observer)  # a round trip through the broker after the DISCONNECT
    assert b"offline" not in collector.payloads()

    late = Collector()
    observer.subscribe(status, 1, late)
    assert late.next().payload == b"stopped"  # the retained status is the final one
    assert device.counters.get("publish_failures") == 0


def test_a_raising_handler_does_not_kill_the_network_thread(mosquitto_plain: Mosquitto, make_link: MakeLink) -> None:
    seen: list[bytes] = []

    def fragile(message: InboundMessage) -> None:
        seen.append(message.payload)
        if message.payload == b"first":
            raise RuntimeError("handler bug")

    link = make_link(settings_for(mosquitto_plain))
    link.subscribe("edged/dev-1/req", 1, fragile)
    start_and_sync(link)
    for payload in (b"first", b"second"):
        assert link.publish("edged/dev-1/req", payload, qos=1).wait(WAIT_S)
    wait_until(lambda: seen == [b"first", b"second"], "the message after the failure")
    assert link.counters.get("handler_errors") == 1
    assert link.counters.get("callback_errors") == 0
    assert link.is_connected


def test_full_inbox_drops_and_counts(mosquitto_plain: Mosquitto, make_link: MakeLink) -> None:
    link = make_link(settings_for(mosquitto_plain))

    async def scenario() -> list[bytes]:
        inbox = link.inbox(asyncio.get_running_loop(), maxsize=2)
        link.subscribe("edged/dev-1/req", 1, inbox)
        link.start()
        await asyncio.to_thread(wait_until, lambda: link.is_connected, "connection")
        await asyncio.to_thread(sync_subscriptions, link)
        for index in range(6):  # nobody reads the inbox meanwhile
            assert await link.publish("edged/dev-1/req", bytes([index]), qos=1).acked(WAIT_S)
        await asyncio.to_thread(wait_until, lambda: inbox.dropped == 4, "four drops")
        return [(await inbox.get()).payload for _ in range(2)]

    assert run(scenario()) == [b"\x00", b"\x01"]
    assert link.counters.get("dropped_inbound") == 4


def test_offline_start_publish_and_stop_never_raise(make_link: MakeLink) -> None:
    settings = MqttSettings.model_validate(
        {"url": f"mqtt://127.0.0.1:{free_port()}", "max_queued_messages": 2, "backoff_min_s": 0.05}
    )
    link = make_link(settings)
    link.start()  # nothing listens there: returns at once all the same
    queued = [link.publish("edged/dev-1/telemetry", b"{}", qos=1) for _ in range(2)]
    full = link.publish("edged/dev-1/telemetry", b"{}", qos=1)
    qos0 = link.publish("edged/dev-1/telemetry", b"{}", qos=0)
    assert not any(handle.done for handle in queued)
    assert (full.failure, qos0.failure) == ("Message queue full.", "The client is not currently connected.")
    wait_until(lambda: link.counters.get("connect_failures") >= 2, "retries against the closed port")
    link.stop(final_messages=[StatusMessage(topic="edged/dev-1/status", payload=b"stopped")], timeout=0.5)
    assert all(handle.failure == "link stopped" for handle in queued)
    assert link.counters.get("connects") == 0
