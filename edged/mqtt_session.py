"""Everything that rides on the broker connection: sealed requests, presence, commands, telemetry, updates."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.transports.mqtt import MqttRequestTransport
from edged.transports.mqtt_commands import MqttCommands
from edged.transports.mqtt_presence import Presence
from edged.transports.topics import DeviceTopics

if TYPE_CHECKING:
    from edged.daemon import Daemon

class MqttSession:
    """Built and started by the daemon once the model is loaded; closed after the core has drained."""

    def __init__(self, daemon: "Daemon", settings: MqttSettings) -> None:
        self._daemon = daemon
        self._settings = settings
        self.topics = DeviceTopics(settings.topic_prefix, daemon.config.device_id)
        self.telemetry: Any = None
        self.spool: Any = None
        self.updates: Any = None
        self.homeassistant: Any = None

    async def start(self) -> None:
        daemon, config, topics = self._daemon, self._daemon.config, self.topics
        assert daemon.core is not None
        self.presence = Presence(topics, daemon.state_dir, self._describe, daemon.gateway.prekeys.current_record)
        self.link = MqttLink(self._settings, client_id=f"edged-{config.device_id}", will=self.presence.next_will,
                             on_connect=self._connected, on_disconnect=self._disconnected)
        self.presence.link = self.link
        self.requests = MqttRequestTransport(self.link, topics, daemon.core, daemon.gateway, daemon.model_name,
                                             flush_interval_s=config.privacy.chunk_interval_ms / 1000)
        await self.requests.start()
        self.commands = MqttCommands(self.link, topics, daemon.gateway, self._remote_profile, self._remote_status)
        await self.commands.start()
        daemon.prekey_hooks.append(self.presence.publish_prekey)
        daemon.core.profile_observers.append(lambda name, reason: self.presence.birth())
        if config.telemetry.enabled:
            await self._start_telemetry()
        if config.updates is not None:
            from edged.fleet.service import UpdateService

            # Subscribed before the link starts, so its topics go out with the first connect.
            self.updates = UpdateService(config.updates, daemon.state_dir, config.device_id, self.link, topics, daemon)
            await self.updates.start()
        from edged.homeassistant.feature import HomeAssistant

        if config.homeassistant.enabled or HomeAssistant.announced(daemon.state_dir):  # off: remove what was shown
            from edged.homeassistant.wiring import home_assistant_for

            self.homeassistant = home_assistant_for(daemon, self.link, topics, self._power_state)
            await self.homeassistant.start()
        self.link.start()

    async def _start_telemetry(self) -> None:
        from edged.telemetry.metrics import Metrics
        from edged.telemetry.publisher import TelemetryPublisher
        from edged.telemetry.spool import Spool

        daemon, config = self._daemon, self._daemon.config
        assert daemon.core is not None
        self.spool = Spool(daemon.state_dir / "telemetry-spool.db", config.telemetry.spool_max_bytes)
        await asyncio.to_thread(self.spool.open)
        self.telemetry = TelemetryPublisher(self.link, self.topics.telemetry, self.spool, Metrics(), config.device_id,
                                            config.telemetry.interval_s, self._power_state, self._device_state)
        daemon.core.observers.append(self.telemetry.on_request)
        daemon.core.reject_observers.append(self.telemetry.metrics.record_reject)
        await self.telemetry.start()

    def stop_accepting(self) -> None:
        self.requests.stop_accepting()

    async def close(self) -> None:
        """In reverse: request and command readers, updates, telemetry, then `stopped` and a clean disconnect."""
        await self.requests.close()
        await self.commands.close()
        if self.updates is not None:
            await self.updates.stop()
        if self.homeassistant is not None:
            await self.homeassistant.stop()
        if self.telemetry is not None:
            await self.telemetry.stop()
        await asyncio.to_thread(self.link.stop, [self.presence.stopped_message()], 5.0)
        if self.spool is not None:
            self.spool.close()

    # ---- paho's network thread -------------------------------------------------------------------
    def _connected(self, event: Any) -> None:
        self.presence.birth()
        if self.telemetry is not None:
            self.telemetry.on_connect()
        if self.homeassistant is not None:
            self.homeassistant.on_connect()

    def _disconnected(self, event: Any) -> None:
        if self.telemetry is not None:
            self.telemetry.on_disconnect()

    # ---- what the broker is told ------------------------------------------------------------------
    def _remote_profile(self, name: str) -> dict[str, Any]:
        return self._daemon.override_profile(name, "remote")

    def _remote_status(self) -> dict[str, Any]:
        self.presence.birth()
        return self._daemon.status()

    def _describe(self) -> dict[str, Any]:
        daemon = self._daemon
        info = daemon.worker.info
        return {"model": None if info is None else {"name": info.name, "format": info.format},
                "profile": daemon.core.profile.name if daemon.core else None}

    def _device_state(self) -> dict[str, Any]:
        daemon = self._daemon
        assert daemon.core is not None
        status = daemon.core.status()
        return {"queue_depth": status["queue"]["waiting"] + status["queue"]["running"],
                "profile": status["profile"], "governor_reason": daemon.governor.reason}

    def _power_state(self) -> Any:
        """The power side of the periodic telemetry record."""
        from edged.telemetry.compose import PowerState

        readings = self._daemon.energy.latest()
        counters = self._daemon.energy.counters()
        if readings is None:
            return PowerState()
        return PowerState(
            temperature_cel=readings.temperature_c,
            temperature_source="thermal_zone_max" if readings.temperature_c is not None else None,
            throttled_flags=readings.throttled.raw if readings.throttled is not None else None,
            power_w=readings.power_w, energy_j=self._daemon.energy.total_j if counters else None,
            energy_source="+".join(sorted(counters)) if counters else readings.power_source,
            energy_scope=readings.power_scope)
