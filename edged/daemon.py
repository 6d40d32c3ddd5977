"""The lifecycle owner: start parts in dependency order, serve, drain on SIGTERM, stop in reverse."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from edged import __version__
from edged.config import Config
from edged.core import Core
from edged.engines import create_engine
from edged.engines.worker import ModelWorker
from edged.errors import BadRequest, ConfigError, EdgedError, Unauthorized
from edged.paths import default_socket_path, default_state_dir, demo_model_path
from edged.systemd import Notifier
from edged.transports.unix import Peer, UnixSocketTransport

logger = structlog.get_logger(__name__)

# A single token never takes this long on any supported board: past it the model thread is wedged,
# so the watchdog stops being fed and systemd restarts the service.
STALL_LIMIT_S = 60.0
STATUS_PERIOD_S = 10.0


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._sigint_count = 0
        self.notifier = Notifier()
        self.state_dir = config.state_dir or default_state_dir()
        self.socket_path = config.socket.path or default_socket_path()
        self.model_path = config.model.path or demo_model_path()
        self.core: Core | None = None
        self.transport: UnixSocketTransport | None = None
        self.mqtt: Any = None  # an MqttSession when [mqtt] is configured
        self.wyoming: Any = None  # a WyomingTransport when [wyoming] uri is set
        self._tasks: list[asyncio.Task[None]] = []
        self.reload_hooks: list[Any] = []  # SIGHUP: allow-list, profiles
        self.prekey_hooks: list[Any] = []  # a new prekey record: republish it
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
        for hook in self.reload_hooks:
            try:
                hook()
            except EdgedError as exc:
                logger.error("reload failed; keeping the previous settings", error=str(exc))


    # ---- lifecycle ------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

        try:
            await self._start()
        except EdgedError as exc:
            logger.error("cannot start", error=str(exc))
            await self._stop_parts()
            return 1
        await self._stop.wait()
        self.notifier.stopping()
        await self._stop_parts()
        logger.info("stopped", exit_code=self.exit_code)
        return self.exit_code

    async def _start(self) -> None:
        from edged.power.energy import EnergyMeter  # noqa: PLC0415  (power detection is start-up work)
        from edged.power.profiles import builtin_profiles_dir, load_profiles

        if self.config.updates is not None:
            from edged.fleet.slots import resolve_active_model

            # Finish or undo a half-done model update first, so the daemon starts on a valid model.
            self.model_path = resolve_active_model(self.state_dir) or self.model_path
            if self.config.mqtt is None:
                logger.warning("[updates] is configured but [mqtt] is not: no updates can arrive")
        if self.config.homeassistant.enabled and self.config.mqtt is None:
            logger.warning("[homeassistant] is enabled but [mqtt] is not: Home Assistant cannot discover this device")
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        from edged.power.governor import Governor

        profiles = load_profiles(self.config.profile.directory or builtin_profiles_dir())
        rules = self.config.power.governor
        if self.config.profile.name is not None:
            if self.config.profile.name not in profiles:
                raise ConfigError(f"profile {self.config.profile.name!r} not found; "
                                  f"have: {', '.join(sorted(profiles))}")
            rules = rules.model_copy(update={"default_profile": self.config.profile.name})
        self.profiles = profiles
        self.governor = Governor(profiles, rules)
        self.notifier.status("loading model")
        self.notifier.extend_timeout(120)
        engine = create_engine(Path(self.model_path))
        self.worker = ModelWorker(engine)
        power = self.config.power
        self.energy = EnergyMeter.detect(power.sysfs_root, board=power.board)
        self.energy.start()
        first = self.governor.decide(self.energy.sample(), time.monotonic())
        logger.info("power profile", profile=first.profile_name, reason=first.reason)
        self.core = Core(self.worker, profiles[first.profile_name], self.config.limits, self.energy)
        # The model loads on its thread while keys and transports come up; READY waits for both.
        model_loading = asyncio.create_task(self.core.start(), name="model-load")
        from edged.crypto.gateway import SealedGateway

        self.gateway = SealedGateway(self.config.e2e, self.state_dir, self.config.device_id,
                                     pad_responses=self.config.privacy.pad_responses)
        self.reload_hooks.append(self.gateway.allow_list.reload)
        self.reload_hooks.append(self._reload_profiles)
        sock = self.config.socket
        uids = set(sock.plaintext_uids) if sock.plaintext_uids is not None else {0, os.getuid()}
        self.transport = UnixSocketTransport(
            self.socket_path, self.core, mode=sock.mode, max_frame=sock.max_frame_bytes,
            max_connections=sock.max_connections, plaintext_uids=uids, plaintext_gids=set(sock.plaintext_gids),
            model_name=self.model_name, sealed=self.gateway,
            control={"status": self._control_status, "profile": self._control_profile, "prekey": self._control_prekey})
        await self.transport.start()
        if self.config.wyoming.uri is not None:
            from edged.transports.wyoming import WyomingTransport
            from edged.transports.wyoming_wire import model_facts

            self.wyoming = WyomingTransport(self.config.wyoming, self.core,
                                            lambda: model_facts(self.worker.info, self.model_name()))
            await self.wyoming.start()
        await model_loading  # the birth message on MQTT announces the loaded model
        if self.config.mqtt is not None:
            from edged.mqtt_session import MqttSession

            self.mqtt = MqttSession(self, self.config.mqtt)
            await self.mqtt.start()
        self._tasks.append(asyncio.create_task(self._watchdog_forever(), name="watchdog"))
        self._tasks.append(asyncio.create_task(self._keys_forever(), name="keys"))
        self._tasks.append(asyncio.create_task(self._govern_forever(), name="governor"))
        self.notifier.ready(self._status_line())
        logger.info("ready", version=__version__, socket=str(self.socket_path), state_dir=str(self.state_dir),
                    startup_s=round(time.monotonic() - self.started_at, 3))

    async def _stop_parts(self) -> None:
        # Reverse order, each step on its own so one failure does not skip the rest.
        if self.mqtt is not None:
            self.mqtt.stop_accepting()
        if self.transport is not None:
            try:
                await self.transport.stop_listening()
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
        if getattr(self, "energy", None) is not None:
            self.energy.stop()
        self.notifier.close()

    # ---- watchdog and status ---------------------------------------------------------------
    async def _watchdog_forever(self) -> None:
        period = self.notifier.watchdog_interval_s or STATUS_PERIOD_S
        last_status = 0.0
        while True:
            await asyncio.sleep(min(period, STATUS_PERIOD_S))
            now = time.monotonic()
            stalled = self.worker.stalled_for(now)
            if stalled < STALL_LIMIT_S:
                self.notifier.watchdog()  # fed from the loop: a hung loop or a wedged model both starve it
            else:
                logger.error("model thread made no progress; not feeding the watchdog", stalled_s=round(stalled))
            if now - last_status >= STATUS_PERIOD_S:
                self.notifier.status(self._status_line())
                last_status = now

    async def _keys_forever(self) -> None:
        """Prekey rotation and allow-list changes; a failure is logged and retried next period."""
        while True:
            await asyncio.sleep(self.config.e2e.allow_list_check_s)
            try:
                if self.gateway.maintain():
                    logger.info("prekey rotated")
                    for hook in self.prekey_hooks:
                        hook()
            except Exception:
                logger.exception("key maintenance failed")


    async def _govern_forever(self) -> None:
        """Ask the governor once per sampling period; a switch goes to the core with its reason."""
        while True:
            await asyncio.sleep(self.energy.period_s())
            try:
                self._govern()
            except Exception:
                logger.exception("governor failed")

    def _govern(self) -> None:
        assert self.core is not None
        decision = self.governor.decide(self.energy.latest(), time.monotonic())
        if decision.changed:
            self.core.set_profile(self.profiles[decision.profile_name], reason=decision.reason)

    def override_profile(self, name: str, source: str) -> dict[str, Any]:
        """A local (socket) or remote (MQTT command) override; "auto" hands back to the governor."""
        if name != "auto" and name not in self.profiles:
            raise BadRequest(f"unknown profile {name!r}; have: auto, {', '.join(sorted(self.profiles))}")
        logger.info("profile override", profile=name, source=source)
        self.governor.set_override(None if name == "auto" else name, source)  # type: ignore[arg-type]
        self._govern()
        return {"profile": self.governor.active, "reason": self.governor.reason,
                "overrides": self.governor.overrides()}

    def _reload_profiles(self) -> None:
        from edged.power.profiles import builtin_profiles_dir, load_profiles

        self.profiles = load_profiles(self.config.profile.directory or builtin_profiles_dir())
        assert self.core is not None
        current = self.profiles.get(self.core.profile.name)
        if current is not None and current != self.core.profile:
            self.core.set_profile(current, reason="profiles reloaded")
        from edged.power.governor import Governor

        governor = Governor(self.profiles, self.governor.rules)
        for source, name in self.governor.overrides().items():
            governor.set_override(name, source)  # type: ignore[arg-type]
        self.governor = governor
        logger.info("profiles reloaded", names=sorted(self.profiles))

    async def _control_prekey(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self.gateway.prekey_reply()

    def model_name(self) -> str:
        info = self.worker.info
        return info.name if info else Path(self.model_path).stem

    def _status_line(self) -> str:
        assert self.core is not None
        status = self.core.status()
        return (f"model {self.model_name()}, profile {status['profile']}, "
                f"{status['queue']['waiting']} waiting, {status['queue']['running']} running")

    def status(self) -> dict[str, Any]:
        assert self.core is not None
        return {"device_id": self.config.device_id, "version": __version__, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self.started_at, 1), **self.core.status(),
                "profile_reason": self.governor.reason, "profile_overrides": self.governor.overrides(),
                "energy": {"total_j": round(self.energy.total_j, 3), "counters": self.energy.counters()},
                "sealed_rejects": dict(self.gateway.rejects)}

    async def _control_status(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self.status()

    async def _control_profile(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        assert self.core is not None
        name = message.get("set")
        if set(message) - {"op", "set"} or not isinstance(name, str):
            raise BadRequest('profile op takes {"op": "profile", "set": NAME}')
        if peer.uid not in (0, os.getuid()):
            raise Unauthorized("only root or the daemon's user may change the profile")
        return self.override_profile(name, "local")
