"""Every MQTT topic edged uses, built and parsed in one place: a device's own topics (e2e-v1 §7), the
fleet-wide offer topics and the filters operators and depots subscribe to.

Shared vocabulary of the device, the depot and the operator tools, so it imports nothing from edged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PULL_LEAF: Final = "update/pull"
LOCAL_TOPIC: Final = "local"  # e2e-v1 §3: the request and response topic of a sealed request on the Unix socket


@dataclass(frozen=True)
class DeviceTopics:
    prefix: str
    device_id: str

    def _topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device_id}/{leaf}"

    @property
    def request(self) -> str:
        """Sealed requests in; plaintext is never accepted here."""
        return self._topic("req")

    @property
    def prekey(self) -> str:
        """The signed prekey record, retained."""
        return self._topic("prekey")

    @property
    def status(self) -> str:
        """Birth (`online`), will (`offline`) and `stopped`, retained."""
        return self._topic("status")

    @property
    def telemetry(self) -> str:
        return self._topic("telemetry")

    @property
    def commands(self) -> str:
        """Sealed operator commands (profile override, status refresh)."""
        return self._topic("cmd")

    @property
    def update_offer(self) -> str:
        """Signed release manifests pushed to this device."""
        return self._topic("update/offer")

    @property
    def update_chunks(self) -> str:
        """Model chunks sent by the depot to this device."""
        return self._topic("update/chunks")

    @property
    def update_state(self) -> str:
        """Update progress and result, retained."""
        return self._topic("update/state")

    @property
    def ha_state(self) -> str:
        """Home Assistant: the entities' state, one JSON object."""
        return self._topic("ha/state")

    @property
    def ha_update(self) -> str:
        """Home Assistant: the update entity's state."""
        return self._topic("ha/update")

    @property
    def ha_profile_set(self) -> str:
        """Home Assistant: the power profile select's commands."""
        return self._topic("ha/profile/set")

    @property
    def update_pull(self) -> str:
        """Where the device asks for chunks; the depot answers on ``update_chunks``."""
        return self._topic(PULL_LEAF)


def fleet_status_filter(prefix: str) -> str:
    return f"{prefix}/+/status"


def fleet_telemetry_filter(prefix: str) -> str:
    return f"{prefix}/+/telemetry"


def pull_topic(prefix: str, device_id: str) -> str:
    """Where a device asks for chunks; the depot answers on the device's ``update/chunks``."""
    return DeviceTopics(prefix, device_id).update_pull


def depot_pull_filter(prefix: str, share_group: str | None) -> str:
    """Every device's pull topic; as an MQTT 5 shared subscription, depots of one group split the load."""
    plain = f"{prefix}/+/{PULL_LEAF}"
    return f"$share/{share_group}/{plain}" if share_group else plain


def channel_offer_topic(prefix: str, fleet: str, channel: str) -> str:
    """Retained release offer for every device of ``fleet`` that follows ``channel``."""
    return f"{prefix}/fleet/{fleet}/channel/{channel}/offer"


def group_offer_topic(prefix: str, fleet: str, group: str) -> str:
    """Retained release offer for the devices of one group."""
    return f"{prefix}/fleet/{fleet}/group/{group}/offer"


def fleet_update_state_filter(prefix: str) -> str:
    return f"{prefix}/+/update/state"


def device_of(prefix: str, topic: str, leaf: str) -> str | None:
    """The device id in ``<prefix>/<device>/<leaf>``, or None when ``topic`` is not one of those."""
    head, tail = f"{prefix}/", f"/{leaf}"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    device_id = topic[len(head) : -len(tail)]
    return device_id if device_id and "/" not in device_id else None


def device_of_pull_topic(prefix: str, topic: str) -> str | None:
    return device_of(prefix, topic, PULL_LEAF)


def device_of_state_topic(prefix: str, topic: str) -> str | None:
    return device_of(prefix, topic, "update/state")


def device_of_status_topic(prefix: str, topic: str) -> str | None:
    return device_of(prefix, topic, "status")


def ha_birth_topic(discovery_prefix: str) -> str:
    """Home Assistant's own birth topic: discovery configs are sent again when it comes online."""
    return f"{discovery_prefix}/status"


def ha_config_topic(discovery_prefix: str, component: str, node: str, key: str) -> str:
    """Where the discovery config of one entity is retained."""
    return f"{discovery_prefix}/{component}/{node}/{key}/config"


def rollout_topic(prefix: str, fleet: str, rollout_id: str) -> str:
    """Retained summary of a staged rollout (waves and counts), published by `edged fleet rollout`."""
    return f"{prefix}/fleet/{fleet}/rollout/{rollout_id}"


def fleet_rollout_filter(prefix: str) -> str:
    return f"{prefix}/fleet/+/rollout/+"
