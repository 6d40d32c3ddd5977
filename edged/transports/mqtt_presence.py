"""Retained device presence on MQTT: birth `online`, will `offline`, `stopped`, and the prekey record.

The birth/death sequence number (bdseq) grows with every connection attempt and survives restarts, so
a consumer can tell a stale `offline` will from the current session's (after Sparkplug B).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import structlog

from edged import __version__
from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.publishing import StatusMessage
from edged.ports import ControlPort
from edged.topics import DeviceTopics

logger = structlog.get_logger(__name__)

CAPABILITIES = ("sealed-requests", "e2e-v1", "telemetry", "commands", "updates")
UPDATES_CHECK_S = 30.0  # how often the update readiness (clock sync) is looked at for a changed birth


class Presence(MqttFeature):
    name = "mqtt-presence"

    def __init__(self, topics: DeviceTopics, state_dir: Path, control: ControlPort,
                 updates: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__()
        self._topics = topics
        self._bdseq_file = state_dir / "mqtt-bdseq"
        self._control = control
        # Whether updates can arrive (see MqttSession.update_readiness), so that `edged fleet push`
        # can tell an operator before the offer sits unheard; None: not reported.
        self._updates = updates
        self._updates_published: dict[str, Any] | None = None
        self.bdseq: int | None = None  # read at the first connection attempt, not here

    async def start(self, link: LinkPort) -> None:
        await super().start(link)
        if self._updates is not None:
            self.spawn(self._watch_updates_forever(), f"{self.name}-updates")

    async def _watch_updates_forever(self) -> None:
        assert self._updates is not None
        while True:
            await asyncio.sleep(UPDATES_CHECK_S)
            if self._updates_published is not None and self._updates() != self._updates_published:
                self.birth()  # e.g. NTP has synced: offers are no longer refused for the clock

    def _read_bdseq(self) -> int:
        try:
            return int(self._bdseq_file.read_text().strip())
        except (OSError, ValueError):
            return 0

    def _status(self, state: str, **extra: Any) -> bytes:
        return json.dumps({"state": state, "bdseq": self.bdseq, "device_id": self._topics.device_id,
                           "time_unix_ms": int(time.time() * 1000), **extra}, separators=(",", ":")).encode()

    def next_will(self) -> StatusMessage:
        """Called before every connection attempt: a new bdseq, persisted, and the will that carries it."""
        self.bdseq = (self._read_bdseq() if self.bdseq is None else self.bdseq) + 1
        tmp = self._bdseq_file.with_suffix(".tmp")
        try:
            tmp.write_text(str(self.bdseq))
            os.replace(tmp, self._bdseq_file)
        except OSError as exc:  # a read-only state dir must not stop the connection
            logger.warning("cannot persist mqtt bdseq", error=str(exc))
        return StatusMessage(topic=self._topics.status, payload=self._status("offline", **self._membership()),
                             retain=True)

    def _membership(self) -> dict[str, Any]:
        """The will and `stopped` keep the device's fleet and groups, so that `edged fleet rollout` counts a
        device that is offline now in its groups (as pending)."""
        if self._updates is None:
            return {}
        updates = self._updates_published or self._updates()
        return {"updates": {key: updates[key] for key in ("enabled", "fleet", "groups") if key in updates}}

    def birth(self) -> None:
        """On every connect: the retained `online` status and the current prekey record."""
        if self._link is None:
            return
        extra: dict[str, Any] = {"capabilities": list(CAPABILITIES)}
        if self._updates is not None:
            updates = self._updates_published = self._updates()
            extra = {"capabilities": [c for c in CAPABILITIES if c != "updates" or updates["enabled"]],
                     "updates": updates}
        online = self._status("online", version=__version__, **extra, **self._control.describe())
        self._link.publish(self._topics.status, online, qos=1, retain=True)
        self.publish_prekey()

    def publish_prekey(self) -> None:
        if self._link is not None:
            self._link.publish(self._topics.prekey, self._control.prekey_record(), qos=1, retain=True)

    def stopped_message(self) -> StatusMessage:
        return StatusMessage(topic=self._topics.status, payload=self._status("stopped", version=__version__,
                                                                              **self._membership()),
                             retain=True)
