"""What edged announces to Home Assistant: one device, its entities, and their discovery config messages.

Per-entity discovery (``<prefix>/<component>/<node>/<object>/config``, retained) rather than the newer
device-based form, so Home Assistant releases from before 2024.11 see the device too. Every entity
reads one retained JSON state topic through a template; the model's update entity reads its own.
Names follow https://www.home-assistant.io/integrations/mqtt/ (full keys, no abbreviations).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from edged import __version__
from edged.topics import DeviceTopics, ha_birth_topic, ha_config_topic

# edged's presence payload is JSON with state online | offline | stopped; both offline and stopped
# (and anything unreadable) mean unavailable, so the template renders only the two payloads HA knows.
AVAILABILITY_TEMPLATE = "{{ 'online' if (value_json is defined and value_json.state == 'online') else 'offline' }}"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Entity:
    component: str  # sensor | binary_sensor | update | select
    key: str        # the object id, unique within this device
    name: str
    fields: dict[str, Any] = field(default_factory=dict)


def _value(key: str) -> str:
    return "{{ value_json." + key + " }}"


def _sensor(key: str, name: str, value: str, **fields: Any) -> Entity:
    return Entity("sensor", key, name, {"value_template": _value(value), **fields})


def _problem(key: str, name: str, value: str) -> Entity:
    return Entity("binary_sensor", key, name, {"value_template": _value(value), "payload_on": "ON",
                                               "payload_off": "OFF", "device_class": "problem",
                                               "entity_category": "diagnostic"})


ENERGY_ATTRIBUTES = "{{ {'source': value_json.energy_source, 'scope': value_json.energy_scope} | tojson }}"

ENTITIES: tuple[Entity, ...] = (
    _sensor("decode_speed", "Decode speed", "decode_tps", unit_of_measurement="tok/s", state_class="measurement",
            icon="mdi:speedometer", suggested_display_precision=1),
    _sensor("decode_speed_median", "Decode speed (median)", "decode_tps_median", unit_of_measurement="tok/s",
            state_class="measurement", icon="mdi:speedometer", suggested_display_precision=1),
    _sensor("ttft", "Time to first token", "ttft_ms", device_class="duration", unit_of_measurement="ms",
            state_class="measurement", suggested_display_precision=0),
    _sensor("ttft_median", "Time to first token (median)", "ttft_ms_median", device_class="duration",
            unit_of_measurement="ms", state_class="measurement", suggested_display_precision=0),
    _sensor("energy_per_token", "Energy per token", "j_per_token", unit_of_measurement="J/token",
            state_class="measurement", icon="mdi:lightning-bolt-outline", suggested_display_precision=3),
    _sensor("power", "Power", "power_w", device_class="power", unit_of_measurement="W", state_class="measurement",
            suggested_display_precision=2),
    _sensor("energy", "Energy", "energy_wh", device_class="energy", unit_of_measurement="Wh",
            state_class="total_increasing", suggested_display_precision=3,
            json_attributes_template=ENERGY_ATTRIBUTES),
    _sensor("cpu_temperature", "CPU temperature", "cpu_temp_c", device_class="temperature",
            unit_of_measurement="°C", state_class="measurement", entity_category="diagnostic",
            suggested_display_precision=1),
    _problem("throttled", "CPU throttled", "throttled"),
    _problem("under_voltage", "Under-voltage", "under_voltage"),
    _sensor("profile", "Power profile", "profile", icon="mdi:tune-variant"),
    _sensor("queue_depth", "Queue depth", "queue_depth", state_class="measurement", icon="mdi:tray-full"),
    _sensor("requests_served", "Requests served", "requests_served", state_class="total_increasing",
            icon="mdi:counter"),
    Entity("update", "model", "Model", {"title": "Language model"}),
)
PROFILE_SELECT = Entity("select", "profile_select", "Power profile override",
                        {"value_template": _value("profile_choice"), "entity_category": "config",
                         "icon": "mdi:tune-variant"})
ALL_ENTITIES = (*ENTITIES, PROFILE_SELECT)


@dataclass(frozen=True)
class HaTopics:
    """edged's own topics for Home Assistant, next to its other device topics, and the discovery topics."""

    device: DeviceTopics
    discovery_prefix: str

    @property
    def node(self) -> str:
        return _UNSAFE.sub("_", f"edged_{self.device.device_id}")

    @property
    def state(self) -> str:
        return self.device.ha_state

    @property
    def update(self) -> str:
        return self.device.ha_update

    @property
    def profile_command(self) -> str:
        return self.device.ha_profile_set

    @property
    def birth(self) -> str:
        return ha_birth_topic(self.discovery_prefix)

    def config(self, entity: Entity) -> str:
        return ha_config_topic(self.discovery_prefix, entity.component, self.node, entity.key)


def device_block(device_id: str, name: str | None) -> dict[str, Any]:
    return {"identifiers": [device_id], "name": name or f"edged {device_id}", "manufacturer": "edged",
            "model": "edged inference daemon", "sw_version": __version__}


ORIGIN = {"name": "edged", "sw_version": __version__}


def config_payload(entity: Entity, topics: HaTopics, device: dict[str, Any],
                   profiles: list[str] | None = None) -> bytes:
    """The retained discovery config of one entity."""
    config: dict[str, Any] = {
        "name": entity.name, "unique_id": f"{topics.node}_{entity.key}",
        "state_topic": topics.update if entity.component == "update" else topics.state,
        "availability": [{"topic": topics.device.status, "value_template": AVAILABILITY_TEMPLATE,
                          "payload_available": "online", "payload_not_available": "offline"}],
        "device": device, "origin": ORIGIN, **entity.fields}
    if "json_attributes_template" in config:
        config["json_attributes_topic"] = topics.state
    if entity.component == "select":
        config["command_topic"] = topics.profile_command
        config["options"] = ["auto", *(profiles or [])]
    return json.dumps(config, separators=(",", ":"), ensure_ascii=False).encode()
