"""The MQTT request transport: sealed requests in through an untrusted broker, sealed chunks out."""

from __future__ import annotations

import asyncio
from typing import Any, Callable

import structlog

from edged.errors import EnvelopeRejected, RequestError
from edged.transports.ports import CorePort
from edged.transports.relay import relay_events
from edged.transports.topics import DeviceTopics

logger = structlog.get_logger(__name__)

# Responses older than this are useless to a client; the broker may drop them (MQTT 5 expiry).
RESPONSE_EXPIRY_S = 300


class MqttRequestTransport:
    """Subscribes to the device's request topic; every valid sealed request is answered on its own task.

    Rejected envelopes (garbage, plaintext, replays, duplicate deliveries, unknown clients) are dropped
    with a counter and a log line and never answered: over MQTT an answer would help an attacker.
    """

    def __init__(self, link: Any, topics: DeviceTopics, core: CorePort, gateway: Any,
                 model_name: Callable[[], str], *, max_pending: int = 1024, flush_interval_s: float = 0.0) -> None:
        self._link = link
        self._topics = topics
        self._core = core
        self._gateway = gateway
        self._model_name = model_name
        self._max_pending = max_pending
        self._flush_interval_s = flush_interval_s
        self._inbox: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._answers: set[asyncio.Task[None]] = set()
        self.dropped: dict[str, int] = {}

    async def start(self) -> None:
        self._inbox = self._link.inbox(asyncio.get_running_loop(), self._max_pending)
        self._link.subscribe(self._topics.request, 1, self._inbox)
        self._reader = asyncio.create_task(self._read_forever(), name="mqtt-requests")

    def stop_accepting(self) -> None:
        self._link.unsubscribe(self._topics.request)

    async def close(self) -> None:
        """After the core drained: cancel what is left (their jobs were already cancelled)."""
        tasks = [*self._answers, *([self._reader] if self._reader else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _read_forever(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                self._request_from_mqtt(message)
            except Exception:  # one message must never stop the reader
                logger.exception("mqtt request handling failed", topic=message.topic)

    def _request_from_mqtt(self, message: Any) -> None:
        try:
            exchange = self._gateway.open(message.payload, message.topic)
        except EnvelopeRejected as exc:
            self.dropped[exc.check] = self.dropped.get(exc.check, 0) + 1
            return
        task = asyncio.create_task(self._answer(exchange), name=f"mqtt-answer-{exchange.request_id}")
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, exchange: Any) -> None:
        correlation = exchange.opened.req_id

        async def chunk_to_mqtt(obj: dict[str, Any], final: bool, error: bool) -> None:
            self._link.publish(exchange.resp_topic, exchange.seal(obj, final=final, error=error), qos=1,
                               correlation_data=correlation, expiry_s=RESPONSE_EXPIRY_S)

        try:
            request = self._gateway.admit(exchange)
            job = self._core.submit(request, transport="mqtt", peer="broker", client=exchange.client_label,
                                    request_id=exchange.request_id)
        except RequestError as exc:  # authenticated client: it gets a sealed error
            await chunk_to_mqtt(exc.to_wire(), True, True)
            return
        try:
            await relay_events(job, self._model_name(), chunk_to_mqtt, min_interval_s=self._flush_interval_s)
        finally:
            if not job.finished:
                job.cancel("transport closed")
