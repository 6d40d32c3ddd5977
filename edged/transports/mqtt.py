"""The MQTT request transport: sealed requests in through an untrusted broker, sealed chunks out."""

from __future__ import annotations

from typing import Any

import structlog

from edged.errors import ClockNotSynchronised, EnvelopeRejected, RequestError
from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.inbound import InboundMessage
from edged.ports import ControlPort, CorePort, ExchangePort, GatewayPort
from edged.transports.relay import relay_events
from edged.topics import DeviceTopics

logger = structlog.get_logger(__name__)

# Responses older than this are useless to a client; the broker may drop them (MQTT 5 expiry).
RESPONSE_EXPIRY_S = 300


class MqttRequestTransport(MqttFeature):
    """Subscribes to the device's request topic; every valid sealed request is answered on its own task.

    Rejected envelopes (garbage, plaintext, replays, duplicate deliveries, unknown clients) are dropped
    with a counter and a log line and never answered: over MQTT an answer would help an attacker.
    """

    name = "mqtt-requests"

    def __init__(self, topics: DeviceTopics, core: CorePort, gateway: GatewayPort, control: ControlPort, *,
                 max_pending: int = 1024, flush_interval_s: float = 0.0) -> None:
        super().__init__()
        self._topics = topics
        self._core = core
        self._gateway = gateway
        self._control = control
        self._max_pending = max_pending
        self._flush_interval_s = flush_interval_s
        self.dropped: dict[str, int] = {}

    async def start(self, link: LinkPort) -> None:
        await super().start(link)
        self.subscribe(self._topics.request, 1, self._max_pending, self._request_from_mqtt)

    def stop_accepting(self) -> None:
        self.link.unsubscribe(self._topics.request)

    async def close(self) -> None:
        """After the core drained: cancel what is left (their jobs were already cancelled)."""
        await self.stop()

    def _request_from_mqtt(self, message: InboundMessage) -> None:
        try:
            exchange = self._gateway.open(message.payload, message.topic)
        except ClockNotSynchronised as exc:  # the one rejection an authenticated client hears about
            self._refuse(exc.exchange, exc.answer())  # type: ignore[arg-type]
            return
        except EnvelopeRejected as exc:
            self.dropped[exc.check] = self.dropped.get(exc.check, 0) + 1
            return
        self.spawn(self._answer(exchange), f"mqtt-answer-{exchange.request_id}")

    def _refuse(self, exchange: ExchangePort, error: RequestError) -> None:
        self.link.publish(exchange.resp_topic, exchange.seal(error.to_wire(), final=True, error=True), qos=1,
                          correlation_data=exchange.opened.req_id, expiry_s=RESPONSE_EXPIRY_S)

    async def _answer(self, exchange: ExchangePort) -> None:
        correlation = exchange.opened.req_id

        async def chunk_to_mqtt(obj: dict[str, Any], final: bool, error: bool) -> None:
            self.link.publish(exchange.resp_topic, exchange.seal(obj, final=final, error=error), qos=1,
                               correlation_data=correlation, expiry_s=RESPONSE_EXPIRY_S)

        try:
            request = self._gateway.admit(exchange)
            job = self._core.submit(request, transport="mqtt", peer="broker", client=exchange.client_label,
                                    request_id=exchange.request_id)
        except RequestError as exc:  # authenticated client: it gets a sealed error
            await chunk_to_mqtt(exc.to_wire(), True, True)
            return
        try:
            await relay_events(job, self._control.model_name(), chunk_to_mqtt, min_interval_s=self._flush_interval_s)
        finally:
            if not job.finished:
                job.cancel("transport closed")
