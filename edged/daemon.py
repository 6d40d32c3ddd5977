"""The lifecycle owner: start parts in dependency order, serve, drain on SIGTERM, stop in reverse."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edged import __version__
from edged.config import Config
from edged import assembly
from edged.core import Core
from edged.control import DeviceControl
from edged.errors import EdgedError
from edged.events import Events
from edged.paths import default_socket_path, default_state_dir, demo_model_path
from edged.systemd import Notifier
from edged.memory import release_large_blocks
from edged.messages import ChatRequest
from edged.validation import prebuild

if TYPE_CHECKING:
    from edged.http_service import HttpService
    from edged.mqtt_session import MqttSession
    from edged.transports.unix import UnixSocketTransport
    from edged.transports.wyoming import WyomingTransport
    from edged.power.energy import EnergyMeter

logger = structlog.get_logger(__name__)

# A single token never takes this long on any supported board: past it the model thread is wedged,
# so the watchdog stops being fed and systemd restarts the service.
STALL_LIMIT_S = 60.0
STATUS_PERIOD_S = 10.0


class Daemon:
    """Owns the lifecycle. ``run()`` is the process's: it takes SIGTERM, SIGINT and SIGHUP. An embedder
    that owns the process's signals itself (the in-process test harness) calls ``serve()`` and
    ``request_stop()``/``reload()``, and passes the ``notifier`` (sd_notify) it wants."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._sigint_count = 0
        self.notifier = notifier if notifier is not None else Notifier()
        self.state_dir = config.state_dir or default_state_dir()
        self.socket_path = config.socket.path or default_socket_path()
        self.model_path = config.model.path or demo_model_path()
        self.events = Events()  # request_finished, request_rejected, profile_changed, prekey_rotated, reload
        self.core: Core | None = None
        self.control: DeviceControl | None = None  # built once the parts exist; every transport gets it
        self.transport: UnixSocketTransport | None = None
        self.mqtt: MqttSession | None = None  # when [mqtt] is configured
        self.wyoming: WyomingTransport | None = None  # when [wyoming] uri is set
        self.energy: EnergyMeter | None = None
        self.http: HttpService | None = None  # when [http] is enabled
        self._tasks: list[asyncio.Task[None]] = []
        self._model_loading: asyncio.Task[None] | None = None
        self.exit_code = 0

    # ---- signals --------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            logger.info("stopping", reason=reason)
        self._stop.set()

    def _on_sigint(self) -> None:
        self._sigint_count += 1
        if self._sigint_count > 1:
            logger.warning("second interrupt: exiting without draining")
            os._exit(130)
        self.request_stop("SIGINT")

    def reload(self) -> None:
        """SIGHUP: re-read what can change live (profiles, allow-list)."""
        logger.info("reload requested")
        if self.events.reload.emit():
            logger.error("reload failed; keeping the previous settings of what failed")


    # ---- lifecycle ------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        return await self.serve()

    async def serve(self) -> int:
        """Start, serve until ``request_stop``, stop; the exit code (1 when the start failed)."""
        try:
            await self._start()
        except EdgedError as exc:
            logger.error("cannot start", error=str(exc))
            if self._model_loading is not None:  # a load still running would fail into the shutdown, unread
                self._model_loading.cancel()
                await asyncio.gather(self._model_loading, return_exceptions=True)
            await self._stop_parts()
            return 1
        await self._stop.wait()
        self.notifier.stopping()
        await self._stop_parts()
        logger.info("stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _start(self) -> None:
        """Build the parts in dependency order (edged/assembly.py), start each, then READY."""
        config = self.config
        if config.updates is not None:
            from edged.fleet.device.slots import resolve_active_model  # noqa: PLC0415  (only with [updates])

            # Finish or undo a half-done model update first, so the daemon starts on a valid model.
            self.model_path = resolve_active_model(self.state_dir) or self.model_path
            if config.mqtt is None:
                logger.warning("[updates] is configured but [mqtt] is not: no updates can arrive")
        if config.homeassistant.enabled and config.mqtt is None:
            logger.warning("[homeassistant] is enabled but [mqtt] is not: Home Assistant cannot discover this device")
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        profiles, profiles_dir, governor = assembly.profiles_and_governor(config)
        self.notifier.status("loading model")
        self.notifier.extend_timeout(120)
        release_large_blocks()  # prefix states and grammar indexes are megabytes: give them back when freed
        self.worker = assembly.model_worker(config, self.state_dir, Path(self.model_path))
        self.energy = assembly.energy_meter(config)
        self.energy.start()
        first = governor.decide(self.energy.sample(), time.monotonic())
        logger.info("power profile", profile=first.profile_name, reason=first.reason)
        self.core = Core(self.worker, profiles[first.profile_name], config.limits, self.energy, self.events)
        # The model loads on its thread while keys and transports come up; READY waits for both.
        model_loading = self._model_loading = asyncio.create_task(self.core.start(), name="model-load")
        await asyncio.sleep(0)  # the load is handed to the worker thread before the gateway's imports run
        self.gateway = assembly.sealed_gateway(config, self.state_dir, self.events)
        self.control = DeviceControl(
            device_id=config.device_id, core=self.core, worker=self.worker, governor=governor, profiles=profiles,
            profiles_dir=profiles_dir, energy=self.energy, gateway=self.gateway,
            configured_model=Path(self.model_path), events=self.events, started_at=self.started_at)
        peers = assembly.plaintext_peers(config.socket)
        self.transport = assembly.socket_transport(config.socket, self.socket_path, self.core, self.control,
                                                   self.gateway, peers)
        await self.transport.start()
        self.http = assembly.http_service(config, core=self.core, control=self.control, events=self.events,
                                          energy=self.energy, socket_path=self.socket_path,
                                          state_dir=self.state_dir, peers=peers, mqtt=lambda: self.mqtt)
        if self.http is not None:  # binds its sockets and imports h11 while the model loads; serves from READY
            await self.http.start()
        self.wyoming = assembly.wyoming_transport(config, self.core, self.worker, self.control, self.state_dir)
        if self.wyoming is not None:
            await self.wyoming.start()
        prebuild(ChatRequest)  # the first request's validator, built while the model loads
        await model_loading  # the birth message on MQTT announces the loaded model
        self.mqtt = assembly.mqtt_session(config, core=self.core, gateway=self.gateway, control=self.control,
                                          events=self.events, state_dir=self.state_dir)
        if self.mqtt is not None:
            await self.mqtt.start()
        self._tasks.append(asyncio.create_task(self._watchdog_forever(), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._keys_forever(), name="keys"))
        self._tasks.append(asyncio.create_task(self._govern_forever(), name="governor"))
        self.notifier.ready(self.control.status_line())
        logger.info("ready", version=__version__, socket=str(self.socket_path), state_dir=str(self.state_dir),
                    startup_s=round(time.monotonic() - self.started_at, 3))
        if self.http is not None:
            self.http.serve()

    async def _stop_parts(self) -> None:
        # Reverse order, each step on its own so one failure does not skip the rest.
        if self.mqtt is not None:
            self.mqtt.stop_accepting()
        if self.transport is not None:
            try:
                await self.transport.stop_listening()
                if self.http is not None:
                    await self.http.stop_listening()
            except Exception:
                logger.exception("stopping the socket failed")
                self.exit_code = 1
        if self.core is not None:
            try:
                await self.core.drain(self.config.shutdown.drain_timeout_s)
            except Exception:
                logger.exception("draining failed")
                self.exit_code = 1
        if self.transport is not None:
            await self.transport.close_connections()
        if self.http is not None:
            await self.http.close()
        if self.wyoming is not None:
            try:
                await self.wyoming.close()  # after the drain: a voice answer in flight gets to finish
            except Exception:
                logger.exception("stopping the Wyoming server failed")
                self.exit_code = 1
        if self.mqtt is not None:
            try:
                await self.mqtt.close()
            except Exception:
                logger.exception("stopping MQTT failed")
                self.exit_code = 1
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.core is not None:
            try:
                await self.core.stop()
            except Exception:
                logger.exception("stopping the model failed")
                self.exit_code = 1
        if self.energy is not None:
            self.energy.stop()
        self.notifier.close()

    # ---- watchdog and status ---------------------------------------------------------------
    async def _watchdog_forever(self) -> None:
        period = self.notifier.watchdog_interval_s or STATUS_PERIOD_S
        last_status = 0.0
        while True:
            await asyncio.sleep(min(period, STATUS_PERIOD_S))
            now = time.monotonic()
            if self.healthy(now):
                self.notifier.watchdog()  # fed from the loop: a hung loop or a wedged model both starve it
            if now - last_status >= STATUS_PERIOD_S and self.control is not None:
                self.notifier.status(self.control.status_line())
                last_status = now

    def healthy(self, now: float) -> bool:
        """Whether to feed the watchdog: the model thread moves and the core's dispatcher still runs.

        A dead dispatcher would leave requests admitted only to time out, so the daemon also stops
        (exit code 1) for the service manager to restart it, even where no watchdog is configured.
        """
        if self.core is not None and not self.core.alive:
            logger.error("request dispatcher ended; not feeding the watchdog and stopping for a restart")
            self.exit_code = 1
            self.request_stop("core failed")
            return False
        stalled = self.worker.stalled_for(now)
        if stalled >= STALL_LIMIT_S:
            logger.error("model thread made no progress; not feeding the watchdog", stalled_s=round(stalled))
            return False
        return True

    async def _keys_forever(self) -> None:
        """Prekey rotation and allow-list changes; a failure is logged and retried next period."""
        while True:
            await asyncio.sleep(self.config.e2e.allow_list_check_s)
            try:
                if self.gateway.maintain():
                    logger.info("prekey rotated")
                    self.events.prekey_rotated.emit()
            except Exception:
                logger.exception("key maintenance failed")


    async def _govern_forever(self) -> None:
        """Ask the governor once per sampling period; a switch goes to the core with its reason."""
        while True:
            assert self.energy is not None and self.control is not None
            await asyncio.sleep(self.energy.period_s())
            try:
                self.control.govern()
            except Exception:
                logger.exception("governor failed")
