"""Build the Home Assistant feature from the running daemon (the one place that knows the daemon's shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from edged.homeassistant.entities import HaTopics
from edged.homeassistant.feature import HomeAssistant
from edged.homeassistant.state import DeviceFacts
from edged.transports.topics import DeviceTopics

if TYPE_CHECKING:
    from edged.daemon import Daemon
    from edged.telemetry.compose import PowerState


def home_assistant_for(daemon: "Daemon", link: Any, topics: DeviceTopics,
                       power: Callable[[], "PowerState"]) -> HomeAssistant:
    config = daemon.config
    core = daemon.core
    assert core is not None

    def queue_depth() -> int:
        queue = core.status()["queue"]
        return int(queue["waiting"] + queue["running"])

    facts = DeviceFacts(
        power=power, profile=lambda: core.profile.name, queue_depth=queue_depth,
        served=lambda: core.counts.get("ok", 0), model_name=daemon.model_name,
        profile_names=lambda: sorted(daemon.profiles),
        profile_choice=lambda: daemon.governor.overrides().get("remote", "auto"),
        set_profile=lambda name: daemon.override_profile(name, "remote"))
    feature = HomeAssistant(config.homeassistant, link, HaTopics(topics, config.homeassistant.discovery_prefix),
                            facts, daemon.state_dir, config.telemetry.interval_s,
                            follow_updates=config.updates is not None)
    core.observers.append(feature.on_request)
    return feature
