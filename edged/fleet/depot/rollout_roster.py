"""Who is in which group, online or not, and what each device last reported: folded from retained messages.

Group membership comes from the devices themselves: their retained ``<prefix>/<device>/status`` (birth,
will and ``stopped`` alike) carries ``updates: {fleet, groups}`` from their ``[updates]`` section, so a
device that is offline now is still known to be in its groups. An edged from before this field counts in
no group (it still takes group offers, and is counted when it reports about the release).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from edged.jsonbody import json_object_or_none
from edged.errors import UpdateError
from edged.fleet.messages import UpdateStateReport, parse_state
from edged.mqtt.inbound import InboundMessage
from edged.topics import device_of_state_topic, device_of_status_topic, fleet_status_filter, fleet_update_state_filter

MAX_DEVICES: Final = 200_000  # a flood of invented device ids must not exhaust the operator's memory
MAX_STATUS_BYTES: Final = 64 * 1024
MAX_GROUPS: Final = 64
DEVICE_ID: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")  # what a device's config accepts (Config.device_id)


@dataclass
class DeviceView:
    device_id: str
    presence: str = "?"
    fleet: str | None = None
    groups: frozenset[str] = field(default_factory=frozenset)
    report: UpdateStateReport | None = None


class FleetRoster:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.devices: dict[str, DeviceView] = {}
        self.ignored = 0  # malformed status or state messages

    def filters(self) -> list[str]:
        return [fleet_status_filter(self.prefix), fleet_update_state_filter(self.prefix)]

    def apply(self, message: InboundMessage) -> bool:
        """Fold one message in; True when it was about a device."""
        device_id = device_of_state_topic(self.prefix, message.topic)
        if device_id is not None:
            if not message.payload:
                return False  # a cleared retained state
            try:
                report = parse_state(message.payload)
            except UpdateError:
                self.ignored += 1
                return False
            view = self._view(device_id)
            if view is not None:
                view.report = report
            return view is not None
        device_id = device_of_status_topic(self.prefix, message.topic)
        if device_id is None or not message.payload:
            return False
        status = _parse_status(message.payload)
        if status is None:
            self.ignored += 1
            return False
        view = self._view(device_id)
        if view is None:
            return False
        view.presence = str(status.get("state", "?"))[:16]
        updates = status.get("updates")
        if isinstance(updates, dict):
            fleet, groups = updates.get("fleet"), updates.get("groups")
            if isinstance(fleet, str):
                view.fleet = fleet[:64]
            if isinstance(groups, list):
                view.groups = frozenset(g[:64] for g in groups[:MAX_GROUPS] if isinstance(g, str))
        return True

    def _view(self, device_id: str) -> DeviceView | None:
        if not DEVICE_ID.match(device_id):
            self.ignored += 1  # no edged has this id: someone else's topic, or an attempt at the operator's terminal
            return None
        view = self.devices.get(device_id)
        if view is None and len(self.devices) < MAX_DEVICES:
            view = self.devices[device_id] = DeviceView(device_id)
        return view

    def members(self, fleet: str, group: str) -> list[str]:
        return sorted(d for d, view in self.devices.items() if group in view.groups and view.fleet == fleet)

    def view(self, device_id: str) -> DeviceView:
        return self.devices.get(device_id) or DeviceView(device_id)


def _parse_status(payload: bytes) -> dict[str, object] | None:
    if len(payload) > MAX_STATUS_BYTES:
        return None
    return json_object_or_none(payload)  # any device may publish a status
