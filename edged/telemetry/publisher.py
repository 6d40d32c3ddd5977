"""Store-and-forward publishing: every record goes to the spool first, leaves it on PUBACK.

The publisher hands a record to the MQTT link only while connected and remembers the highest seq
handed over (the cursor). paho resends what was in flight across a reconnect, so after an outage only
records above the cursor are sent: each record reaches the broker once. A publish that fails locally
rewinds the cursor; after a restart the cursor starts at 0 and the whole backlog goes out, flagged
historical.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Callable

import structlog

from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.publishing import PublishHandle
from edged.telemetry.records import DeviceRecord, TelemetryRecord
from edged.state import DeviceState, PowerState
from edged.summary import RequestSummary
from edged.telemetry.compose import device_record, request_record
from edged.telemetry.metrics import Metrics
from edged.telemetry.sampler import ProcSampler
from edged.telemetry.spool import Spool, SpoolError

logger = structlog.get_logger(__name__)

BATCH = 100
MAX_IN_FLIGHT = 200  # stay under the link's max_queued_messages


class TelemetryPublisher(MqttFeature):
    name = "mqtt-telemetry"

    def __init__(self, topic: str, spool: Spool, metrics: Metrics, device_id: str, interval_s: float,
                 power_state: Callable[[], PowerState], device_state: Callable[[], DeviceState]) -> None:
        super().__init__()
        self._topic = topic
        self._spool = spool
        self.metrics = metrics
        self._device_id = device_id
        self._interval_s = interval_s
        self._power_state = power_state
        self._device_state = device_state
        self._sampler = ProcSampler()
        self._started = time.monotonic()
        self._cursor = 0
        self._in_flight: set[int] = set()
        self._failed: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup = asyncio.Event()

    async def start(self, link: LinkPort) -> None:
        await super().start(link)
        self._loop = asyncio.get_running_loop()
        self.spawn(self._flush_forever(), "telemetry-flush")
        self.spawn(self._device_records_forever(), "telemetry-device")

    # ---- called from paho's network thread -----------------------------------------------------
    def on_connect(self) -> None:
        self._spool.connection_started()
        self._wake_threadsafe()

    def on_disconnect(self) -> None:
        self._spool.connection_lost()

    def _wake_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _acked(self, seq: int, handle: PublishHandle) -> None:
        self._in_flight.discard(seq)
        if handle.ok:
            try:
                self._spool.mark_sent(seq)
            except SpoolError as exc:  # the record stays and goes again after a restart
                logger.warning("telemetry ack not recorded", seq=seq, error=str(exc))
        else:
            self._failed.add(seq)
        self._wake_threadsafe()

    # ---- the event loop side -------------------------------------------------------------------
    def on_request(self, summary: RequestSummary) -> None:
        """`request_finished` listener: once per finished request."""
        self.metrics.record_request(summary)
        record = request_record(summary, device_id=self._device_id, time_unix_ms=int(time.time() * 1000))
        self.spawn(self._append(record), "telemetry-append")

    async def _append(self, record: TelemetryRecord) -> None:
        try:
            await asyncio.to_thread(self._spool.append, record)  # fsync: never on the loop
        except SpoolError as exc:
            logger.error("telemetry record not spooled", kind=record.kind, error=str(exc))
            return
        self._wakeup.set()

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await self._flush()
            except Exception:
                logger.exception("telemetry flush failed")
                await asyncio.sleep(5)

    async def _flush(self) -> None:
        if self._failed:
            self._cursor = min(self._cursor, min(self._failed) - 1)
            self._failed.clear()
        while self.link.is_connected and len(self._in_flight) < MAX_IN_FLIGHT:
            batch = await asyncio.to_thread(self._spool.pending, BATCH, self._cursor)
            if not batch:
                return
            for message in batch:
                if not self.link.is_connected or len(self._in_flight) >= MAX_IN_FLIGHT:
                    return
                self._in_flight.add(message.seq)
                handle = self.link.publish(self._topic, message.payload, qos=1)
                self._cursor = message.seq
                handle.on_ack(functools.partial(self._acked, message.seq))

    async def _device_records_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                record = self.device_record()
            except Exception:
                logger.exception("device telemetry record failed")
                continue
            await self._append(record)

    def device_record(self) -> DeviceRecord:
        state = self._device_state()
        return device_record(
            device_id=self._device_id, time_unix_ms=int(time.time() * 1000),
            uptime_s=time.monotonic() - self._started, sample=self._sampler.sample(),
            metrics=self.metrics.snapshot(reset_histograms=True), spool=self._spool.stats(),
            power=self._power_state(), queue_depth=state.queue_depth, profile=state.profile,
            governor_reason=state.governor_reason[:200])
