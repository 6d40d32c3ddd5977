"""Everything that rides on the broker connection: sealed requests, presence, commands, telemetry, updates.

The session gets the parts it wires (core, gateway, control port, event hub), never the daemon.
Every feature has the MqttFeature shape: built here without I/O, started on the link, stopped in
reverse. Who listens to which event is visible in `start`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edged.config import Config
from edged.events import Events
from edged.homeassistant.feature import HomeAssistant
from edged.homeassistant.wiring import home_assistant_for
from edged.mqtt.feature import MqttFeature
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.mqtt.connection import LinkEvent
from edged.ports import ControlPort, GatewayPort, ModelCorePort, UpdateControlPort
from edged.transports.mqtt import MqttRequestTransport
from edged.transports.mqtt_commands import MqttCommands
from edged.mqtt_limits import max_inbound_packet
from edged.transports.mqtt_presence import Presence
from edged.topics import DeviceTopics

if TYPE_CHECKING:
    from edged.fleet.device.service import UpdateService
    from edged.telemetry.publisher import TelemetryPublisher
    from edged.telemetry.spool import Spool


class SessionControl(ControlPort, UpdateControlPort, Protocol):
    """The control port as the session needs it: device questions and what updates need."""


class MqttSession:
    """Built and started by the daemon once the model is loaded; closed after the core has drained."""

    def __init__(self, settings: MqttSettings, config: Config, *, core: ModelCorePort, gateway: GatewayPort,
                 control: SessionControl, events: Events, state_dir: Path) -> None:
        self._settings = settings
        self._config = config
        self._core = core
        self._gateway = gateway
        self._control = control
        self._events = events
        self._state_dir = state_dir
        self.topics = DeviceTopics(settings.topic_prefix, config.device_id)
        self.presence = Presence(self.topics, state_dir, control, updates=self.update_readiness)
        self.requests = MqttRequestTransport(self.topics, core, gateway, control,
                                             flush_interval_s=config.privacy.chunk_interval_ms / 1000)
        self.commands = MqttCommands(self.topics, gateway, control, on_status=self.presence.birth)
        self.telemetry: TelemetryPublisher | None = None
        self.spool: Spool | None = None
        self.updates: UpdateService | None = None
        self.homeassistant: HomeAssistant | None = None
        self._features: list[MqttFeature] = []
        self.link: MqttLink | None = None

    async def start(self) -> None:
        config = self._config
        self.link = MqttLink(self._settings, client_id=f"edged-{config.device_id}", will=self.presence.next_will,
                             on_connect=self._connected, on_disconnect=self._disconnected,
                             max_packet_bytes=max_inbound_packet(config.e2e.max_request_bytes))
        link = self.link
        self._control.add_status_section("mqtt", lambda: {"connected": link.is_connected, **link.counters.snapshot()})
        features: list[MqttFeature] = [self.presence, self.requests, self.commands]
        self._events.prekey_rotated.connect(self.presence.publish_prekey)
        self._events.profile_changed.connect(lambda name, reason: self.presence.birth(), name="Presence.birth")
        if config.telemetry.enabled:
            features.append(await self._telemetry())
        if config.updates is not None:
            from edged.fleet.device.service import UpdateService

            self.updates = UpdateService(config.updates, self._state_dir, config.device_id, self.topics,
                                         self._core, self._control)
            # A deferred install looks again when what it waits for may have changed (never by polling).
            recheck = self.updates.install_gate.recheck
            self._events.request_finished.connect(recheck, name="InstallGate.recheck")
            self._events.profile_changed.connect(recheck, name="InstallGate.recheck")
            self._events.reload.connect(recheck, name="InstallGate.recheck")
            features.append(self.updates)
        if config.homeassistant.enabled or HomeAssistant.announced(self._state_dir):  # off: remove what was shown
            self.homeassistant = home_assistant_for(config, self.topics, self._control, self._events, self._state_dir)
            features.append(self.homeassistant)
        # Subscribed before the link starts, so every topic goes out with the first connect.
        for feature in features:
            await feature.start(self.link)
            self._features.append(feature)
        self.link.start()

    async def _telemetry(self) -> TelemetryPublisher:
        from edged.telemetry.metrics import Metrics
        from edged.telemetry.publisher import TelemetryPublisher
        from edged.telemetry.spool import Spool

        config = self._config
        self.spool = Spool(self._state_dir / "telemetry-spool.db", config.telemetry.spool_max_bytes)
        await asyncio.to_thread(self.spool.open)
        self.telemetry = TelemetryPublisher(self.topics.telemetry, self.spool, Metrics(), config.device_id,
                                            config.telemetry.interval_s, self._control.power_state,
                                            self._control.device_state)
        self._events.request_finished.connect(self.telemetry.on_request)
        self._events.request_rejected.connect(self.telemetry.metrics.record_reject)
        return self.telemetry

    def update_readiness(self) -> dict[str, Any]:
        """Can an update offer be taken now? Part of the retained birth, read by `edged fleet push`."""
        from edged.crypto.clock import clock_synchronised

        updates = self._config.updates
        if updates is None:
            return {"enabled": False}
        synchronised = clock_synchronised()
        return {"enabled": True, "clock_policy": updates.clock_policy, "clock_synchronised": synchronised,
                "blocked_by_clock": not synchronised and updates.clock_policy == "reject",
                "install_window": updates.install_window, "install_when": updates.install_when,
                "fleet": updates.fleet, "groups": list(updates.groups)}

    def stop_accepting(self) -> None:
        self.requests.stop_accepting()

    async def close(self) -> None:
        """In reverse: updates, telemetry, command and request readers, then `stopped` and a clean disconnect."""
        for feature in reversed(self._features):
            await feature.stop()
        if self.link is not None:
            await asyncio.to_thread(self.link.stop, [self.presence.stopped_message()], 5.0)
        if self.spool is not None:
            self.spool.close()

    # ---- paho's network thread -------------------------------------------------------------------
    def _connected(self, event: LinkEvent) -> None:
        self.presence.birth()
        if self.telemetry is not None:
            self.telemetry.on_connect()
        if self.homeassistant is not None:
            self.homeassistant.on_connect()

    def _disconnected(self, event: LinkEvent) -> None:
        if self.telemetry is not None:
            self.telemetry.on_disconnect()
