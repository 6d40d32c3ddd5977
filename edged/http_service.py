"""Wiring of the HTTP API: settings from the config, /health and /metrics from the daemon's parts.

Built by the daemon only when `[http] enabled` is true, so aiohttp is imported only then. This is the
one place the HTTP side reads the daemon's members; the transport itself sees only callables.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged.crypto.api_keys import API_KEYS_FILE
from edged.telemetry.prometheus import DeviceGauges, PrometheusMetrics

if TYPE_CHECKING:
    from edged.daemon import Daemon
    from edged.transports.http.app import HttpTransport

HTTP_SOCKET_NAME = "http.sock"


class HttpService:
    def __init__(self, daemon: "Daemon") -> None:
        self._daemon = daemon
        self.metrics = PrometheusMetrics()
        self.transport: "HttpTransport | None" = None

    async def start(self) -> None:
        from edged.transports.http.app import HttpSettings, HttpTransport

        daemon, config = self._daemon, self._daemon.config
        assert daemon.core is not None
        sock, http = config.socket, config.http
        settings = HttpSettings(
            socket_path=http.socket or daemon.socket_path.parent / HTTP_SOCKET_NAME, mode=sock.mode,
            max_body_bytes=sock.max_frame_bytes,
            plaintext_uids=set(sock.plaintext_uids) if sock.plaintext_uids is not None else {0, os.getuid()},
            plaintext_gids=set(sock.plaintext_gids), keys_path=daemon.state_dir / API_KEYS_FILE,
            listen=http.listen, tls_cert=http.tls_cert, tls_key=http.tls_key)
        self.transport = HttpTransport(settings, daemon.core.submit, daemon.model_name, self.health,
                                       self.render_metrics)
        daemon.core.observers.append(self.metrics.on_request)
        daemon.core.reject_observers.append(self.metrics.on_reject)
        daemon.reload_hooks.append(self.transport.reload_keys)
        await self.transport.start()

    async def stop_listening(self) -> None:
        if self.transport is not None:
            await self.transport.stop_listening()

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    # ---- what the endpoints report --------------------------------------------------------------
    def model_state(self) -> tuple[str, str | None]:
        """ready, loading, swapping, unavailable or unloaded (idle; loads at the next request), and why."""
        worker = getattr(self._daemon, "worker", None)
        if worker is None or self._daemon.core is None:
            return "loading", None
        if worker.activity is not None:
            return worker.activity, None
        if worker.info is not None:
            return "ready", None
        if worker.load_error:
            return "unavailable", worker.load_error
        return ("loading", None) if worker.settings is None else ("unloaded", None)

    def health(self) -> tuple[int, dict[str, Any]]:
        state, error = self.model_state()
        body: dict[str, Any] = {"status": state if state != "unloaded" else "ready", "model": self._daemon.model_name()}
        if state == "unloaded":
            body["model_loaded"] = False  # unloaded while idle: the next request loads it
        if error:
            body["error"] = error
        if self._daemon.core is not None:
            body["profile"] = self._daemon.core.profile.name
        return (200 if body["status"] == "ready" else 503), body

    def render_metrics(self) -> str:
        return self.metrics.render(self.device_gauges())

    def device_gauges(self) -> DeviceGauges:
        daemon = self._daemon
        assert daemon.core is not None
        info = daemon.worker.info
        queue = daemon.core.status()["queue"]
        readings = daemon.energy.latest()
        throttled = None
        if readings is not None and readings.throttled is not None:
            t = readings.throttled
            throttled = {"under_voltage": t.under_voltage, "freq_capped": t.freq_capped, "throttled": t.throttled,
                         "soft_temp_limit": t.soft_temp_limit}
        mqtt = daemon.mqtt
        spool = mqtt.spool.stats() if mqtt is not None and mqtt.spool is not None else None
        return DeviceGauges(
            version=__version__, device_id=daemon.config.device_id,
            model_name=info.name if info else None, model_format=info.format if info else None,
            model_state=self.model_state()[0], profile=daemon.core.profile.name,
            profiles=tuple(getattr(daemon, "profiles", {})), queue_waiting=queue["waiting"],
            queue_running=queue["running"], queue_capacity=queue["capacity"],
            energy_j_by_source=daemon.energy.counters(),
            power_w=readings.power_w if readings else None, power_source=readings.power_source if readings else None,
            temperature_c=readings.temperature_c if readings else None, throttled=throttled,
            mqtt_connected=mqtt.link.is_connected if mqtt is not None else None,
            spool_pending_messages=spool.pending if spool else None,
            spool_pending_bytes=spool.pending_bytes if spool else None,
            spool_dropped_total=spool.dropped_total if spool else None)
