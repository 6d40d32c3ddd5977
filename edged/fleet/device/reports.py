"""The device's retained update state: what it reports on ``<prefix>/<device>/update/state`` and how often."""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from edged.fleet.device.journal import Journal, UpdateRecord
from edged.fleet.messages import ActiveModel, ReleaseRef, UpdateStateReport
from edged.fleet.device.slots import Slots
from edged.mqtt.feature import LinkPort

logger = structlog.get_logger(__name__)


class StateReporter:
    """Publishes each state change (QoS 1, retained) and download progress at a bounded rate.

    Every report names the model serving now (``active``), read from the slot pointer, so a fleet
    view shows what runs even while an update is rejected or fails.
    """

    def __init__(self, link: LinkPort, topic: str, device_id: str, slots: Slots, configured_model: Path,
                 progress_interval_s: float) -> None:
        self._link = link
        self._topic = topic
        self._device_id = device_id
        self._slots = slots
        self._configured_model = configured_model
        self._interval = progress_interval_s
        self._last_progress = 0.0

    def __call__(self, state: str, record: UpdateRecord | None, *, reason: str | None = None,
                 detail: str | None = None, progress: tuple[float, int, int] | None = None) -> None:
        report = UpdateStateReport.model_validate({
            "device_id": self._device_id, "state": state, "reason": reason,
            "detail": detail[:300] if detail else None,
            "release": ReleaseRef(channel=record.channel, version=record.version) if record else None,
            "step": record.step if record else None,
            "progress_pct": progress[0] if progress else None,
            "bytes_done": progress[1] if progress else None,
            "bytes_total": progress[2] if progress else None,
            "active": self._active()})
        self._link.publish(self._topic, report.encode(), qos=1, retain=True)
        if state not in ("downloading", "paused"):
            logger.info("update state", state=state, reason=reason, version=record.version if record else None)

    def progress(self, record: UpdateRecord, done: int, total: int, paused: str | None) -> None:
        """A pause, the end, or at most one report per interval: a fleet of devices is broker load."""
        now = time.monotonic()
        if paused is None and done < total and now - self._last_progress < self._interval:
            return
        self._last_progress = now
        pct = round(100.0 * done / total, 1) if total else 100.0
        self("paused" if paused else "downloading", record, reason=paused, progress=(pct, done, total))

    def last_outcome(self, journal: Journal) -> None:
        """At start: what the journal says happened last (an update in progress reports as it resumes)."""
        record = journal.load().update
        if record is None:
            self("idle", None)
        elif record.step == "committed":
            self("active", record)
        elif record.step in ("rolled_back", "failed"):
            self(record.step, record, reason=record.reason, detail=record.detail)

    def _active(self) -> ActiveModel:
        pointer = self._slots.read_pointer()
        if pointer is None:
            return ActiveModel(slot=None, model=self._configured_model.name)
        return ActiveModel(slot=pointer.slot, model=pointer.model,
                           release=ReleaseRef(channel=pointer.channel, version=pointer.version))
