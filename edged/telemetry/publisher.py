"""Store-and-forward publishing: every record goes to the spool first, leaves it on PUBACK.

The publisher hands a record to the MQTT link only while connected and remembers the highest seq
handed over (the cursor). paho resends what was in flight across a reconnect, so after an outage only
records above the cursor are sent: each record reaches the broker once. A publish that fails locally
rewinds the cursor; after a restart the cursor starts at 0 and the whole backlog goes out, flagged
historical.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import structlog

from edged.job import RequestSummary
from edged.telemetry.compose import PowerState, device_record, request_record
from edged.telemetry.metrics import Metrics, RequestStats
from edged.telemetry.sampler import ProcSampler
from edged.telemetry.spool import Spool, SpoolError

logger = structlog.get_logger(__name__)

BATCH = 100
MAX_IN_FLIGHT = 200  # stay under the link's max_queued_messages


def stats_from_summary(summary: RequestSummary) -> RequestStats:
    measured = summary.outcome == "ok"
    return RequestStats(
        outcome=summary.outcome, transport=summary.transport, priority=summary.priority, profile=summary.profile,
        queue_ms=summary.queue_ms if measured else None, ttft_ms=summary.ttft_ms if measured else None,
        duration_ms=summary.total_ms, decode_tokens_per_s=summary.decode_tokens_per_s if measured else None,
        input_tokens=summary.prompt_tokens, output_tokens=summary.completion_tokens,
        energy_j=summary.energy_j if measured else None, energy_source=summary.energy_source if measured else None,
        energy_scope=summary.energy_scope if measured else None)


class TelemetryPublisher:
    def __init__(self, link: Any, topic: str, spool: Spool, metrics: Metrics, device_id: str, interval_s: float,
                 power_state: Callable[[], PowerState], device_state: Callable[[], dict[str, Any]]) -> None:
        self._link = link
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
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [asyncio.create_task(self._flush_forever(), name="telemetry-flush"),
                       asyncio.create_task(self._device_records_forever(), name="telemetry-device")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- called from paho's network thread -----------------------------------------------------
    def on_connect(self) -> None:
        self._spool.connection_started()
        self._wake_threadsafe()

    def on_disconnect(self) -> None:
        self._spool.connection_lost()

    def _wake_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def _acked(self, seq: int, handle: Any) -> None:
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
        """Core observer: once per finished request."""
        stats = stats_from_summary(summary)
        self.metrics.record_request(stats)
        record = request_record(stats, device_id=self._device_id, time_unix_ms=int(time.time() * 1000))
        asyncio.get_running_loop().create_task(self._append(record))

    async def _append(self, record: Any) -> None:
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
        while self._link.is_connected and len(self._in_flight) < MAX_IN_FLIGHT:
            batch = await asyncio.to_thread(self._spool.pending, BATCH, self._cursor)
            if not batch:
                return
            for message in batch:
                if not self._link.is_connected or len(self._in_flight) >= MAX_IN_FLIGHT:
                    return
                self._in_flight.add(message.seq)
                handle = self._link.publish(self._topic, message.payload, qos=1)
                self._cursor = message.seq
                handle.on_ack(lambda h, seq=message.seq: self._acked(seq, h))

    async def _device_records_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                record = self.device_record()
            except Exception:
                logger.exception("device telemetry record failed")
                continue
            await self._append(record)

    def device_record(self) -> Any:
        state = self._device_state()
        return device_record(
            device_id=self._device_id, time_unix_ms=int(time.time() * 1000),
            uptime_s=time.monotonic() - self._started, sample=self._sampler.sample(),
            metrics=self.metrics.snapshot(reset_histograms=True), spool=self._spool.stats(),
            power=self._power_state(), queue_depth=state["queue_depth"], profile=state["profile"],
            governor_reason=state["governor_reason"][:200])
