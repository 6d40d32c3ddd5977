"""Operator side of updates: pick the offer topic, push a signed manifest, follow devices' update states."""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from edged.jsonbody import json_object_or_none
from edged.errors import ConfigError, TransportError, UpdateError
from edged import atomic
from edged.fleet import dsse
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import RELEASE_PAYLOAD_TYPE, ReleaseManifest, parse_manifest
from edged.fleet.messages import UpdateStateReport, parse_state
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.topics import (
    DeviceTopics,
    channel_offer_topic,
    device_of_state_topic,
    device_of_status_topic,
    fleet_status_filter,
    fleet_update_state_filter,
    group_offer_topic,
)

CONNECT_TIMEOUT_S: Final = 15.0
INBOX_MAX: Final = 10_000


def read_manifest(path: Path, keys_dir: Path | None = None) -> tuple[bytes, ReleaseManifest]:
    """The signed envelope and its manifest; with ``keys_dir`` the signatures are checked against its root."""
    try:
        envelope = atomic.read_bounded(path, dsse.MAX_ENVELOPE_BYTES)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        if keys_dir is not None:
            root = OperatorKeys(keys_dir).current_root()
            payload = dsse.verify(envelope, RELEASE_PAYLOAD_TYPE, root.release.key_map(), root.release.threshold)
        else:
            parsed = dsse.parse_envelope(envelope)
            if parsed.payload_type != RELEASE_PAYLOAD_TYPE:
                raise UpdateError("payload_type", f"{path} is not a release manifest")
            payload = dsse.decode_base64(parsed.payload, "payload")
        return envelope, parse_manifest(payload)
    except UpdateError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def offer_topic(prefix: str, manifest: ReleaseManifest, *, device: str | None = None, group: str | None = None,
                channel: str | None = None) -> str:
    """Exactly one of device, group or channel; a channel must be the manifest's own."""
    if sum(x is not None for x in (device, group, channel)) != 1:
        raise ConfigError("give exactly one of --device, --group or --channel")
    if device is not None:
        return DeviceTopics(prefix, device).update_offer
    if group is not None:
        return group_offer_topic(prefix, manifest.fleet, group)
    if channel != manifest.channel:
        raise ConfigError(f"the manifest is for channel {manifest.channel!r}, not {channel!r}")
    return channel_offer_topic(prefix, manifest.fleet, manifest.channel)


def connect(settings: MqttSettings, client_id: str, timeout: float = CONNECT_TIMEOUT_S) -> MqttLink:
    link = MqttLink(settings, client_id=client_id)
    link.start()
    end = time.monotonic() + timeout
    while not link.is_connected:
        if time.monotonic() > end:
            link.stop()
            raise TransportError(f"could not connect to {settings.broker_url().redacted()} within {timeout:.0f} s")
        time.sleep(0.02)
    return link


def push(settings: MqttSettings, topic: str, envelope: bytes, *, retain: bool = True,
         timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Publish the manifest (QoS 1) and wait for the broker's acknowledgement."""
    link = connect(settings, f"edged-push-{int(time.time() * 1000) % 10**9}", timeout)
    try:
        handle = link.publish(topic, envelope, qos=1, retain=retain)
        if not handle.wait(timeout):
            raise TransportError(f"the broker did not acknowledge the manifest on {topic}: {handle.failure}")
    finally:
        link.stop()


@dataclass
class DeviceUpdates:
    """What `edged fleet status` knows of one device."""

    device_id: str
    presence: str = "?"
    report: UpdateStateReport | None = None
    changed: float = field(default_factory=time.monotonic)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"device_id": self.device_id, "presence": self.presence}
        if self.report is not None:
            data |= {"label": self.report.label(), **self.report.model_dump(mode="json", exclude_none=True)}
        return data

    def row(self) -> tuple[str, ...]:
        report = self.report
        if report is None:
            return (self.device_id, self.presence, "-", "-", "-", "")
        release = f"{report.release.channel} v{report.release.version}" if report.release else "-"
        active = report.active
        model = "-" if active is None else (f"{active.slot}: {active.model}" if active.slot else active.model)
        return (self.device_id, self.presence, report.label(), release, model, (report.detail or "")[:60])


COLUMNS: Final = ("device", "presence", "update", "release", "active model", "detail")


class UpdateBoard:
    """Latest retained update state and presence per device, from the broker."""

    def __init__(self, prefix: str, devices: set[str] | None = None) -> None:
        self.prefix = prefix
        self.only = devices or None
        self.devices: dict[str, DeviceUpdates] = {}

    def filters(self) -> list[str]:
        return [fleet_update_state_filter(self.prefix), fleet_status_filter(self.prefix)]

    def apply(self, message: InboundMessage) -> DeviceUpdates | None:
        """Fold one message in; the device's entry when it changed."""
        device_id = device_of_state_topic(self.prefix, message.topic)
        if device_id is not None:
            if self.only and device_id not in self.only:
                return None
            try:
                report = parse_state(message.payload)
            except UpdateError:
                return None
            entry = self.devices.setdefault(device_id, DeviceUpdates(device_id))
            entry.report = report
        else:
            device_id = device_of_status_topic(self.prefix, message.topic)
            if device_id is None or (self.only and device_id not in self.only):
                return None
            status = json_object_or_none(message.payload)  # anyone may publish a device's status
            if status is None:
                return None
            state = status.get("state", "?")
            entry = self.devices.setdefault(device_id, DeviceUpdates(device_id))
            entry.presence = str(state)[:16]
        entry.changed = time.monotonic()
        return entry

    def all_in(self, states: set[str], version: int | None = None) -> bool:
        """Every expected device (or every device seen) is in one of ``states`` (about release ``version``)."""
        expected = self.only or set(self.devices)
        return bool(expected) and all(_reached(self.devices.get(d), states, version) for d in expected)

    def render(self) -> str:
        rows = [COLUMNS, *(self.devices[d].row() for d in sorted(self.devices))]
        widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        if not self.devices:
            lines.append("(no device has reported an update state yet)")
        return "\n".join(lines)


def _reached(entry: DeviceUpdates | None, states: set[str], version: int | None) -> bool:
    report = entry.report if entry is not None else None
    if report is None or report.state not in states:
        return False
    return version is None or (report.release is not None and report.release.version == version)




def subscribe_board(settings: MqttSettings, board: UpdateBoard, client_id: str) -> tuple[MqttLink, queue.Queue[Any]]:
    """A connected link feeding the board's topics into a bounded queue (drops when full, never blocks paho)."""
    inbox: queue.Queue[InboundMessage] = queue.Queue(maxsize=INBOX_MAX)

    def put(message: InboundMessage) -> None:
        try:
            inbox.put_nowait(message)
        except queue.Full:
            pass

    link = MqttLink(settings, client_id=client_id)
    for topic_filter in board.filters():
        link.subscribe(topic_filter, 1, put)
    link.start()
    return link, inbox
