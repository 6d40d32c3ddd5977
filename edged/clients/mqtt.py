"""A blocking client that asks a device over MQTT with sealed requests (e2e-v1): for tools, tests, benchmarks."""

from __future__ import annotations

import json
import os
import queue
import time
from typing import Any, Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.crypto.client import PrekeyInfo, SealedRequest, verify_prekey_record
from edged.crypto.response_topic import normalise_prefix
from edged.clients.socket import event_of
from edged.errors import EdgedError, TransportError
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.topics import DeviceTopics


class SealedMqttClient:
    """Pins a device identity, fetches its retained prekey record, seals requests, opens the responses.

    Responses come back on ``<response_prefix>/<random>``, a topic that the client's allow-list entry
    on the device must permit (its ``response_prefix``).
    """

    def __init__(self, settings: MqttSettings, *, device_id: str, client_key: Ed25519PrivateKey,
                 device_identity: bytes, response_prefix: str, client_id: str | None = None) -> None:
        self.topics = DeviceTopics(settings.topic_prefix, device_id)
        self._client_key = client_key
        self._identity = device_identity
        self._device_id = device_id
        self._resp_topic = f"{normalise_prefix(response_prefix)}/{os.urandom(6).hex()}"
        self._prekeys: queue.Queue[bytes] = queue.Queue()
        self._chunks: queue.Queue[InboundMessage] = queue.Queue()
        self._prekey: PrekeyInfo | None = None
        self.link = MqttLink(settings, client_id=client_id or f"edged-client-{os.urandom(4).hex()}")

    def __enter__(self) -> "SealedMqttClient":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, timeout: float = 15.0) -> None:
        self.link.subscribe(self.topics.prekey, 1, lambda m: self._prekeys.put(m.payload))
        self.link.subscribe(self._resp_topic, 1, self._chunks.put)
        self.link.start()
        end = time.monotonic() + timeout
        while not self.link.is_connected:
            if time.monotonic() > end:
                raise TransportError("could not connect to the broker")
            time.sleep(0.01)

    def close(self) -> None:
        self.link.stop()

    def prekey(self, timeout: float = 15.0) -> PrekeyInfo:
        """The newest verified prekey (the retained record, refreshed when the device rotates)."""
        try:
            while True:
                record = self._prekeys.get(timeout=0 if self._prekey else timeout)
                self._prekey = verify_prekey_record(record, identity_pub=self._identity,
                                                    device_id=self._device_id, now=time.time())
        except queue.Empty:
            pass
        if self._prekey is None:
            raise TransportError(f"no prekey record on {self.topics.prekey}: is the device online?")
        return self._prekey

    def seal(self, body: dict[str, Any] | bytes, request_topic: str | None = None) -> SealedRequest:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return SealedRequest.build(client_key=self._client_key, prekey=self.prekey(), identity_pub=self._identity,
                                   request_topic=request_topic or self.topics.request, resp_topic=self._resp_topic,
                                   body=data)

    def command(self, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Send an operator command (docs/protocol.md, Commands) and return the device's answer."""
        sealed = self.seal(body, request_topic=self.topics.commands)
        self.link.publish(self.topics.commands, sealed.data, qos=1)
        return next(self.events(sealed, timeout))

    def send(self, sealed: SealedRequest) -> None:
        # MQTT 5 hints for brokers and bridges that route by them; the device ignores both and uses
        # the response topic sealed inside the request.
        self.link.publish(self.topics.request, sealed.data, qos=1, response_topic=self._resp_topic,
                          correlation_data=sealed.req_id)

    def ask(self, body: dict[str, Any], timeout: float = 120.0) -> Iterator[dict[str, Any]]:
        """Seal, publish and yield each response event until the final one."""
        sealed = self.seal(body)
        self.send(sealed)
        yield from self.events(sealed, timeout)

    def events(self, sealed: SealedRequest, timeout: float = 120.0) -> Iterator[dict[str, Any]]:
        end = time.monotonic() + timeout
        while True:
            try:
                message = self._chunks.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                raise TransportError("no complete answer before the timeout") from None
            try:
                chunk = sealed.opener.open(message.payload)
            except EdgedError:
                continue  # not ours, replayed or forged: the opener refuses it and the stream goes on
            yield event_of(chunk.plaintext)
            if chunk.final:
                return
