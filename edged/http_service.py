"""Wiring of the HTTP API: its settings from the config, /health and /metrics from the device's parts.

Built by the daemon only when `[http] enabled` is true, so the HTTP code is imported only then. Like the
MQTT session it gets the parts (core, control port, event hub, energy meter), never the daemon.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from edged import __version__
from edged.config import Config
from edged.events import Events
from edged.ports import ControlPort, CorePort
from edged.power.readings import ThrottleState
from edged.prometheus import DeviceGauges, PrometheusMetrics
from edged.transports.http.settings import HttpSettings, Listener, bind_listeners

if TYPE_CHECKING:
    from edged.mqtt_session import MqttSession
    from edged.power.energy import EnergyMeter
    from edged.transports.http.app import HttpTransport

logger = structlog.get_logger(__name__)

HTTP_SOCKET_NAME = "http.sock"
# crypto.api_keys.API_KEYS_FILE (a test keeps them equal): that module builds pydantic models, which
# costs start-up time better spent after READY, when the HTTP server is imported.
API_KEYS_FILE = "api-keys.json"


class HttpControl(ControlPort, Protocol):
    profiles: Any

    def model_state(self) -> tuple[str, str | None]: ...


class StatusCore(CorePort, Protocol):
    def status(self) -> dict[str, Any]: ...


class HttpService:
    def __init__(self, config: Config, *, core: StatusCore, control: HttpControl, events: Events,
                 energy: "EnergyMeter", socket_path: Path, state_dir: Path,
                 plaintext: tuple[set[int], set[int]], mqtt: Callable[[], "MqttSession | None"]) -> None:
        self._config = config
        self._core = core
        self._control = control
        self._energy = energy
        self._mqtt = mqtt
        self.metrics = PrometheusMetrics()
        events.request_finished.connect(self.metrics.on_request)
        events.request_rejected.connect(self.metrics.on_reject)
        self._events = events
        sock, http = config.socket, config.http
        self.settings = HttpSettings(
            socket_path=http.socket or socket_path.parent / HTTP_SOCKET_NAME, mode=sock.mode,
            max_body_bytes=sock.max_frame_bytes,
            plaintext_uids=plaintext[0], plaintext_gids=plaintext[1], keys_path=state_dir / API_KEYS_FILE,
            listen=http.listen, tls_cert=http.tls_cert, tls_key=http.tls_key)
        self.transport: HttpTransport | None = None
        self._listeners: list[Listener] = []
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind the sockets now, so every refusal (address in use, bad TLS files) happens at start.

        The HTTP code (h11, ~12 ms with ours) is imported here too, while the model loads on its own
        thread: imported after READY it would hold the GIL against the first request. The listeners
        exist from here on (connections wait in their backlog) and `serve` takes them over once ready.
        """
        self._listeners = bind_listeners(self.settings)
        try:
            importlib.import_module("edged.transports.http.app")
        except ImportError:
            logger.exception("the HTTP API cannot be imported; its sockets are closed")
            self._close_listeners()

    def serve(self) -> None:
        """Serve the bound sockets, in the background (the daemon calls it once ready)."""
        self._serving = asyncio.create_task(self._serve(), name="http-start")

    async def _serve(self) -> None:
        try:
            from edged.transports.http.app import HttpTransport  # noqa: PLC0415  (h11 only when [http] is on)

            from edged.crypto.api_keys import ApiKeyStore  # noqa: PLC0415

            self.transport = HttpTransport(self.settings, self._core.submit, self._control.model_name,
                                           self.health, self.render_metrics, ApiKeyStore(self.settings.keys_path))
            self._events.reload.connect(self.transport.reload_keys, name="HttpTransport.reload_keys")
            await self.transport.start(self._listeners)
        except Exception:
            logger.exception("the HTTP API failed to start; its sockets are closed")
            self._close_listeners()

    def _close_listeners(self) -> None:
        for sock, _ in self._listeners:
            sock.close()
        self._listeners = []
        self.settings.socket_path.unlink(missing_ok=True)

    async def stop_listening(self) -> None:
        if self._serving is not None and not self._serving.done():
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
        if self.transport is not None:
            await self.transport.stop_listening()
        self._close_listeners()

    async def close(self) -> None:
        if self.transport is not None:
            await self.transport.close()

    # ---- what the endpoints report --------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        state, error = self._control.model_state()
        body: dict[str, Any] = {"status": "ready" if state == "unloaded" else state,
                                "model": self._control.model_name(), "profile": self._control.describe()["profile"]}
        if state == "unloaded":
            body["model_loaded"] = False  # unloaded while idle: the next request loads it
        if error:
            body["error"] = error
        return (200 if body["status"] == "ready" else 503), body

    def render_metrics(self) -> str:
        return self.metrics.render(self.device_gauges())

    def device_gauges(self) -> DeviceGauges:
        model = self._control.describe()["model"] or {}
        status = self._core.status()
        queue = status["queue"]
        readings = self._energy.latest()
        throttled = None
        if readings is not None and readings.throttled is not None:
            t: ThrottleState = readings.throttled
            throttled = {"under_voltage": t.under_voltage, "freq_capped": t.freq_capped, "throttled": t.throttled,
                         "soft_temp_limit": t.soft_temp_limit}
        mqtt = self._mqtt()
        spool = mqtt.spool.stats() if mqtt is not None and mqtt.spool is not None else None
        link = mqtt.link if mqtt is not None else None
        return DeviceGauges(
            version=__version__, device_id=self._config.device_id,
            model_name=model.get("name"), model_format=model.get("format"),
            model_state=self._control.model_state()[0], profile=status["profile"],
            profiles=tuple(self._control.profiles), queue_waiting=queue["waiting"],
            queue_running=queue["running"], queue_capacity=queue["capacity"],
            energy_j_by_source=self._energy.counters(),
            power_w=readings.power_w if readings else None, power_source=readings.power_source if readings else None,
            temperature_c=readings.temperature_c if readings else None, throttled=throttled,
            mqtt_connected=link.is_connected if link is not None else None,
            spool_pending_messages=spool.pending if spool else None,
            spool_pending_bytes=spool.pending_bytes if spool else None,
            spool_dropped_total=spool.dropped_total if spool else None)
