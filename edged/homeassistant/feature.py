"""Home Assistant MQTT discovery on the daemon's broker connection: announce, keep the values fresh, forget.

Configs go out (retained) on every connect and whenever Home Assistant publishes ``online`` on
``<discovery_prefix>/status``. Values go out after each finished request and once per telemetry
period, never per token. What was announced is remembered in the state dir, so switching the section
off (or changing the prefix) removes exactly those entities with empty retained messages.
Read-only unless ``allow_profile_select``: then the one action is a profile override from the listed
options, the same as an operator's remote override (and a local override still wins).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import structlog

from edged.atomic import read_bounded, write_atomic
from edged.config import DISCOVERY_PREFIX_PATTERN, HomeAssistantConfig
from edged.errors import EdgedError, UpdateError
from edged.fleet.messages import UpdateStateReport, parse_state
from edged.homeassistant.entities import ALL_ENTITIES, ENTITIES, PROFILE_SELECT, HaTopics, config_payload, device_block
from edged.homeassistant.state import DeviceFacts, RequestWindow, device_state, update_state
from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.inbound import InboundMessage
from edged.ratelog import RejectSummary
from edged.summary import RequestSummary

logger = structlog.get_logger(__name__)

MARKER = "homeassistant-discovery.json"
ANNOUNCE_GAP_S = 5.0  # a flood of `online` births (anyone may publish one) costs at most one announce per gap
MAX_COMMAND_BYTES = 64
MAX_MARKER_BYTES = 64 * 1024
MAX_MARKER_TOPICS = 256
COMPONENTS = sorted({entity.component for entity in ALL_ENTITIES})


class HomeAssistant(MqttFeature):
    name = "homeassistant"

    def __init__(self, settings: HomeAssistantConfig, topics: HaTopics, facts: DeviceFacts,
                 state_dir: Path, interval_s: float, follow_updates: bool) -> None:
        super().__init__()
        self._settings = settings
        self.topics = topics
        self._facts = facts
        self._marker = state_dir / MARKER
        self._interval_s = interval_s
        self._follow_updates = follow_updates
        self.window = RequestWindow()
        self._update_report: UpdateStateReport | None = None
        self._announce = asyncio.Event()
        self._values_due = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.refused_commands = 0
        self._bad_update_states = RejectSummary("update state not shown in home assistant", logger, level="warning")

    @staticmethod
    def announced(state_dir: Path) -> bool:
        return (state_dir / MARKER).exists()

    def entities(self) -> tuple[Any, ...]:
        return (*ENTITIES, PROFILE_SELECT) if self._settings.allow_profile_select else ENTITIES

    async def start(self, link: LinkPort) -> None:
        """Subscribe before the link starts, so the subscriptions go out with the first connect."""
        await super().start(link)
        self._loop = asyncio.get_running_loop()
        if not self._settings.enabled:
            self.spawn(self._forget_on_connect(), "ha-forget")
            return
        self.subscribe(self.topics.birth, 1, 4, self._on_birth)
        if self._follow_updates:
            self.subscribe(self.topics.device.update_state, 1, 4, self._on_update_state)
        if self._settings.allow_profile_select:
            self.subscribe(self.topics.profile_command, 1, 4, self._on_profile_command)
        self.spawn(self._announce_forever(), "ha-announce")
        self.spawn(self._values_forever(), "ha-values")

    # ---- events ---------------------------------------------------------------------------------
    def on_connect(self) -> None:
        """paho's network thread: hand over to the loop."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._announce.set)

    def on_request(self, summary: RequestSummary) -> None:
        """``request_finished`` listener, once per finished request."""
        self.window.add(summary)
        self._values_due.set()

    def _on_birth(self, message: InboundMessage) -> None:
        if message.payload.strip() == b"online":
            self._announce.set()

    def _on_update_state(self, message: InboundMessage) -> None:
        payload = message.payload
        try:
            self._update_report = parse_state(payload) if payload else None
        except UpdateError as exc:  # anyone may publish there: a flood of junk is not a flood of lines
            self._bad_update_states.note(exc.reason, error=str(exc)[:200])
            return
        self._publish_update()

    def _on_profile_command(self, message: InboundMessage) -> None:
        payload = message.payload
        name = payload[:MAX_COMMAND_BYTES + 1].decode("utf-8", errors="replace").strip()
        options = ["auto", *self._facts.profile_names()]
        if len(payload) > MAX_COMMAND_BYTES or name not in options:
            self._refused("not one of the options")
            return
        try:
            self._facts.set_profile(name)
        except EdgedError as exc:
            self._refused(str(exc))
        self._values_due.set()

    def _refused(self, why: str) -> None:
        self.refused_commands += 1
        if self.refused_commands == 1 or self.refused_commands % 100 == 0:  # a flood is not a log flood
            logger.warning("home assistant profile command refused", reason=why, refused=self.refused_commands)

    # ---- publishing -----------------------------------------------------------------------------
    async def _announce_forever(self) -> None:
        while True:
            await self._announce.wait()
            self._announce.clear()
            try:
                await self._announce_now()
            except Exception:
                logger.exception("home assistant announce failed")
            await asyncio.sleep(ANNOUNCE_GAP_S)

    async def _announce_now(self) -> None:
        if not self.link.is_connected:
            return  # the next connect announces
        device = device_block(self.topics.device.device_id, self._settings.device_name)
        profiles = self._facts.profile_names()
        current = {self.topics.config(e): config_payload(e, self.topics, device, profiles) for e in self.entities()}
        stale = set(await asyncio.to_thread(self._read_marker)) - set(current)
        stale |= {self.topics.config(e) for e in ALL_ENTITIES} - set(current)  # e.g. the select switched off
        await asyncio.to_thread(self._write_marker, sorted(current))
        for topic in sorted(stale):
            self.link.publish(topic, b"", qos=1, retain=True)
        for topic, payload in current.items():
            self.link.publish(topic, payload, qos=1, retain=True)
        self._publish_values()
        self._publish_update()
        logger.info("home assistant discovery published", entities=len(current), removed=len(stale),
                    prefix=self._settings.discovery_prefix)

    async def _values_forever(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._values_due.wait(), self._interval_s)
            except TimeoutError:
                pass
            self._values_due.clear()
            try:
                self._publish_values()
            except Exception:
                logger.exception("home assistant state failed")

    def _publish_values(self) -> None:
        if not self.link.is_connected:
            return  # values queued while offline would be stale; the next connect announces fresh ones
        self.link.publish(self.topics.state, device_state(self._facts, self.window), qos=1, retain=True)

    def _publish_update(self) -> None:
        if not self.link.is_connected:
            return
        self.link.publish(self.topics.update, update_state(self._update_report, self._facts.model_name()),
                           qos=1, retain=True)

    # ---- forgetting -----------------------------------------------------------------------------
    async def _forget_on_connect(self) -> None:
        """The section is off but entities were announced: remove them once, then forget the marker."""
        while True:
            await self._announce.wait()
            self._announce.clear()
            topics = await asyncio.to_thread(self._read_marker)
            if not topics:
                return
            handles = [self.link.publish(t, b"", qos=1, retain=True) for t in (*topics, *self.value_topics())]
            if all(await asyncio.gather(*(h.acked(10.0) for h in handles))):
                await asyncio.to_thread(self._marker.unlink, True)
                logger.info("home assistant entities removed", entities=len(topics))
                return
            logger.warning("home assistant entities not all removed; trying again at the next connect")

    def value_topics(self) -> tuple[str, ...]:
        return self.topics.state, self.topics.update

    def _read_marker(self) -> list[str]:
        return read_marker(self._marker.parent, self.topics.node)

    def _write_marker(self, topics: list[str]) -> None:
        try:
            write_atomic(self._marker, json.dumps({"topics": topics}).encode(), mode=0o600)
        except OSError as exc:
            logger.warning("cannot remember the announced home assistant entities", error=str(exc))


def read_marker(state_dir: Path, node: str) -> list[str]:
    """The discovery topics this device announced last (none if never, or unreadable).

    Every topic read here is emptied on the broker, so only this device's own config topics count
    (any prefix, a component edged announces, its node id): a damaged or planted file must not remove
    another device's entities or anything else that is retained.
    """
    try:
        raw = read_bounded(state_dir / MARKER, MAX_MARKER_BYTES)
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("announced home assistant entities unreadable", error=str(exc))
        return []
    try:
        if len(raw) > MAX_MARKER_BYTES:
            raise ValueError(f"over {MAX_MARKER_BYTES} bytes")
        topics = json.loads(raw)["topics"]
        if not isinstance(topics, list):
            raise ValueError("topics is not a list")
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # deep nesting is a RecursionError
        logger.warning("announced home assistant entities unreadable", error=str(exc)[:200])
        return []
    own = re.compile(rf"^{DISCOVERY_PREFIX_PATTERN}/(?:{'|'.join(COMPONENTS)})/{re.escape(node)}/[A-Za-z0-9_-]+/config$")
    return [t for t in topics if isinstance(t, str) and own.match(t)][:MAX_MARKER_TOPICS]
