"""Home Assistant's documented MQTT discovery fields, to check every config edged publishes.

From https://www.home-assistant.io/integrations/mqtt/ and the sensor, binary_sensor, update, select and
button pages (2024.11 and later). Templates are rendered with Jinja2, as Home Assistant does, with
`value_json` bound to the state payload.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2

COMMON = {"availability", "availability_mode", "availability_template", "availability_topic", "default_entity_id",
          "device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
          "json_attributes_template", "json_attributes_topic", "name", "object_id", "origin", "payload_available",
          "payload_not_available", "platform", "qos", "unique_id"}
COMPONENTS: dict[str, tuple[set[str], set[str]]] = {  # component: (its own keys, required keys)
    "sensor": ({"device_class", "expire_after", "force_update", "last_reset_value_template", "options",
                "suggested_display_precision", "state_class", "state_topic", "unit_of_measurement",
                "value_template"}, {"state_topic"}),
    "binary_sensor": ({"device_class", "expire_after", "force_update", "off_delay", "payload_off", "payload_on",
                       "state_topic", "value_template"}, {"state_topic"}),
    "update": ({"command_topic", "device_class", "display_precision", "latest_version_template",
                "latest_version_topic", "payload_install", "release_summary", "release_url", "retain",
                "state_topic", "title", "value_template"}, set()),
    "select": ({"command_template", "command_topic", "optimistic", "options", "retain", "state_topic",
                "value_template"}, {"command_topic", "options"}),
    "button": ({"command_template", "command_topic", "device_class", "payload_press", "retain"}, {"command_topic"}),
}
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
               "name", "serial_number", "suggested_area", "sw_version", "via_device"}
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
AVAILABILITY_KEYS = {"payload_available", "payload_not_available", "topic", "value_template"}
SENSOR_UNITS = {"duration": {"d", "h", "min", "s", "ms", "µs"}, "power": {"mW", "W", "kW", "MW", "GW", "TW"},
                "energy": {"J", "kJ", "MJ", "GJ", "mWh", "Wh", "kWh", "MWh", "GWh", "TWh", "cal", "kcal"},
                "temperature": {"°C", "°F", "K"}}
STATE_CLASSES = {"measurement", "measurement_angle", "total", "total_increasing"}
BINARY_SENSOR_CLASSES = {"problem", "safety", "running", "power", "connectivity", "heat", "update"}
ID = re.compile(r"^[A-Za-z0-9_-]+$")
TOPIC = re.compile(r"^(?P<prefix>.+)/(?P<component>[a-z_]+)/(?:(?P<node>[^/]+)/)?(?P<object>[^/]+)/config$")


def check_config(topic: str, config: dict[str, Any]) -> list[str]:
    """Every way this discovery message departs from the documented fields (empty = fine)."""
    match = TOPIC.match(topic)
    if not match:
        return [f"{topic}: not <prefix>/<component>/[<node_id>/]<object_id>/config"]
    component = match["component"]
    if component not in COMPONENTS:
        return [f"{topic}: unknown component {component}"]
    problems = [f"{topic}: id {part!r} has characters outside [a-zA-Z0-9_-]"
                for part in (match["node"], match["object"]) if part is not None and not ID.match(part)]
    own, required = COMPONENTS[component]
    problems += [f"{topic}: undocumented key {key}" for key in set(config) - COMMON - own]
    problems += [f"{topic}: missing {key}" for key in required - set(config)]
    if component == "update" and not {"state_topic", "latest_version_topic"} & set(config):
        problems.append(f"{topic}: an update needs state_topic or latest_version_topic")
    if not config.get("unique_id"):
        problems.append(f"{topic}: no unique_id (the device registry needs one)")
    device = config.get("device") or {}
    problems += [f"{topic}: undocumented device key {key}" for key in set(device) - DEVICE_KEYS]
    if not device.get("identifiers"):
        problems.append(f"{topic}: device without identifiers")
    origin = config.get("origin") or {}
    problems += [f"{topic}: undocumented origin key {key}" for key in set(origin) - ORIGIN_KEYS]
    if not origin.get("name"):
        problems.append(f"{topic}: origin without a name")
    for entry in config.get("availability", []):
        problems += [f"{topic}: undocumented availability key {key}" for key in set(entry) - AVAILABILITY_KEYS]
        if "topic" not in entry:
            problems.append(f"{topic}: availability entry without a topic")
    problems += _classes(topic, component, config)
    return problems


def _classes(topic: str, component: str, config: dict[str, Any]) -> list[str]:
    problems = []
    device_class, unit, state_class = config.get("device_class"), config.get("unit_of_measurement"), \
        config.get("state_class")
    if component == "sensor":
        if device_class is not None and device_class not in SENSOR_UNITS:
            problems.append(f"{topic}: device_class {device_class} not one this check knows")
        elif device_class is not None and unit not in SENSOR_UNITS[device_class]:
            problems.append(f"{topic}: unit {unit} is not valid for device_class {device_class}")
        if state_class is not None and state_class not in STATE_CLASSES:
            problems.append(f"{topic}: state_class {state_class} is not valid")
        if device_class == "energy" and state_class not in ("total", "total_increasing"):
            problems.append(f"{topic}: an energy sensor needs state_class total or total_increasing")
    if component == "binary_sensor" and device_class not in (None, *BINARY_SENSOR_CLASSES):
        problems.append(f"{topic}: binary_sensor device_class {device_class} is not valid")
    if config.get("entity_category") not in (None, "config", "diagnostic"):
        problems.append(f"{topic}: entity_category {config['entity_category']} is not valid")
    return problems


_ENV = jinja2.Environment(undefined=jinja2.Undefined, autoescape=False)


def render(template: str, payload: bytes) -> str:
    """Render a value template the way Home Assistant does for an MQTT message."""
    try:
        value_json: Any = json.loads(payload)
    except ValueError:
        return _ENV.from_string(template).render(value=payload.decode(errors="replace"))
    return _ENV.from_string(template).render(value=payload.decode(), value_json=value_json)


def is_number_or_none(text: str) -> bool:
    """A numeric sensor takes a number, or Home Assistant's "None" for unknown."""
    if text == "None":
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True
