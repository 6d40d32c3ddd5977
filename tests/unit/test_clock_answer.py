"""An authenticated MQTT request refused only for an unsynchronised clock is told so, sealed; others stay silent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.crypto.client import SealedRequest
from edged.crypto.gateway import SealedGateway
from edged.crypto.settings import E2ESettings
from edged.errors import ClockNotSynchronised, EnvelopeRejected
from edged.mqtt.inbound import AsyncInbox, InboundMessage
from edged.transports.mqtt import MqttRequestTransport
from edged.transports.mqtt_commands import MqttCommands
from edged.topics import DeviceTopics

TOPICS = DeviceTopics("edged", "dev-1")
RESP = "edged/clients/c/resp"
BODY = {"messages": [{"role": "user", "content": "hi"}]}


class UnsyncedClock:
    def synchronised(self, monotonic_now: float) -> bool:
        return False


def make(tmp_path: Path, policy: str = "reject") -> tuple[SealedGateway, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "clients.toml").write_text(
        f'[[clients]]\nlabel = "c"\npublic_key = "{key.public_key().public_bytes_raw().hex()}"\n'
        f'response_prefix = "edged/clients/c"\ncommands = true\n')
    gateway = SealedGateway(E2ESettings.model_validate({"clock_policy": policy}), tmp_path, "dev-1")
    gateway.clock = UnsyncedClock()  # type: ignore[assignment]
    return gateway, key


def seal(gateway: SealedGateway, key: Ed25519PrivateKey, topic: str = TOPICS.request,
         body: Any = BODY) -> SealedRequest:
    return SealedRequest.build(client_key=key, prekey=gateway.prekeys.current_info(),
                               identity_pub=gateway.identity.public_bytes, request_topic=topic, resp_topic=RESP,
                               body=json.dumps(body).encode())


def answer(sealed: SealedRequest, chunk: bytes) -> dict[str, Any]:
    opened = sealed.opener.open(chunk)
    assert sealed.opener.complete and opened.error
    return json.loads(opened.plaintext)["error"]


def test_the_gateway_authenticates_first_and_hands_back_a_sealed_answer(tmp_path: Path) -> None:
    gateway, key = make(tmp_path)
    sealed = seal(gateway, key)
    with pytest.raises(ClockNotSynchronised) as caught:
        gateway.open(sealed.data, TOPICS.request)
    assert caught.value.check == "timestamp" and gateway.rejects == {"timestamp": 1}
    error = answer(sealed, caught.value.exchange.seal(caught.value.answer().to_wire(), final=True, error=True))
    assert error["code"] == "unauthorized" and "clock is not synchronised" in error["message"]
    assert "NTP" in error["message"] and "clock_policy" in error["message"]
    with pytest.raises(EnvelopeRejected) as again:  # a replay of it is dropped, not answered twice
        gateway.open(sealed.data, TOPICS.request)
    assert again.value.check == "replay" and not isinstance(again.value, ClockNotSynchronised)


def test_an_unknown_or_forged_sender_still_gets_silence(tmp_path: Path) -> None:
    gateway, _ = make(tmp_path)
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(EnvelopeRejected) as caught:
        gateway.open(seal(gateway, stranger).data, TOPICS.request)
    assert caught.value.check == "client" and not isinstance(caught.value, ClockNotSynchronised)
    data = seal(gateway, stranger).data
    with pytest.raises(EnvelopeRejected) as tampered:  # the last byte flipped (a constant would match 1 in 256)
        gateway.open(data[:-1] + bytes([data[-1] ^ 1]), TOPICS.request)
    assert tampered.value.check == "decrypt"


def test_accept_unsynced_still_admits(tmp_path: Path) -> None:
    gateway, key = make(tmp_path, policy="accept-unsynced")
    exchange = gateway.open(seal(gateway, key).data, TOPICS.request)
    assert exchange.client_label == "c"


class FakeLink:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, Any]]] = []
        self.is_connected = True

    def inbox(self, loop: asyncio.AbstractEventLoop, maxsize: int) -> AsyncInbox:
        return AsyncInbox(loop, maxsize)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> None:
        pass

    def unsubscribe(self, topic_filter: str) -> None:
        pass

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **options: Any) -> None:
        self.published.append((topic, payload, options))


class NoCore:
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a refused request must never reach the core")


class NoControl:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a refused request must not ask the device for {name}")


@pytest.mark.parametrize("feature", ["requests", "commands"])
def test_mqtt_requests_and_commands_answer_the_clock_refusal_sealed(tmp_path: Path, feature: str) -> None:
    gateway, key = make(tmp_path)
    link = FakeLink()

    async def main() -> SealedRequest:
        if feature == "requests":
            part: Any = MqttRequestTransport(TOPICS, NoCore(), gateway, NoControl())  # type: ignore[arg-type]
            topic, body = TOPICS.request, BODY
        else:
            part = MqttCommands(TOPICS, gateway, NoControl())  # type: ignore[arg-type]
            topic, body = TOPICS.commands, {"command": "status"}
        await part.start(link)
        sealed = seal(gateway, key, topic, body)
        handler = part._command_from_mqtt if feature == "commands" else part._request_from_mqtt
        handler(InboundMessage(topic=topic, payload=sealed.data, qos=1))
        handler(InboundMessage(topic=topic, payload=sealed.data, qos=1))  # the broker's duplicate: silence
        await part.stop()
        return sealed

    sealed = asyncio.run(main())
    assert len(link.published) == 1
    topic, chunk, options = link.published[0]
    assert topic == RESP and options["correlation_data"] == sealed.req_id
    error = answer(sealed, chunk)
    assert error["code"] == "unauthorized" and "not synchronised" in error["message"]
