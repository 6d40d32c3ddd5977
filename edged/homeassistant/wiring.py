"""Build the Home Assistant feature from the daemon's parts (core, control port, event hub)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from edged.config import Config
from edged.events import Events
from edged.homeassistant.entities import HaTopics
from edged.homeassistant.feature import HomeAssistant
from edged.homeassistant.state import DeviceFacts
from edged.ports import ControlPort
from edged.topics import DeviceTopics


class HaControl(ControlPort, Protocol):
    """The control port plus the loaded profiles (``control.DeviceControl`` has both)."""

    profiles: dict[str, Any]


def home_assistant_for(config: Config, topics: DeviceTopics, control: Any, events: Events,
                       state_dir: Path) -> HomeAssistant:
    ha_control: HaControl = control
    facts = DeviceFacts(
        power=ha_control.power_state, profile=lambda: ha_control.device_state().profile,
        queue_depth=lambda: ha_control.device_state().queue_depth,
        served=lambda: ha_control.status()["requests"].get("ok", 0),
        model_name=ha_control.model_name, profile_names=lambda: sorted(ha_control.profiles),
        profile_choice=lambda: ha_control.status()["profile_overrides"].get("remote", "auto"),
        set_profile=lambda name: ha_control.override_profile(name, "remote"))
    feature = HomeAssistant(config.homeassistant, HaTopics(topics, config.homeassistant.discovery_prefix), facts,
                            state_dir, config.telemetry.interval_s, follow_updates=config.updates is not None)
    events.request_finished.connect(feature.on_request, name="HomeAssistant.on_request")
    return feature
