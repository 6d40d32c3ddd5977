"""DeviceControl: what the device can be asked and told, built once by the daemon for every transport.

The socket's control ops, the MQTT commands, presence, telemetry and the update service all hold
this one object (typed as ``ports.ControlPort`` / ``ports.UpdateControlPort``) instead of the
``Daemon``. It owns the power-profile choice: the governor, the loaded profiles and overrides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edged import __version__
from edged.errors import BadRequest
from edged.events import Events
from edged.power.governor import Governor
from edged.power.profiles import Profile, load_profiles
from edged.state import DeviceState, InstallState, PowerState

if TYPE_CHECKING:
    from edged.core import Core
    from edged.crypto.gateway import SealedGateway
    from edged.engines.worker import ModelWorker
    from edged.power.energy import EnergyMeter

logger = structlog.get_logger(__name__)


class DeviceControl:
    def __init__(self, *, device_id: str, core: Core, worker: ModelWorker, governor: Governor,
                 profiles: dict[str, Profile], profiles_dir: Path, energy: EnergyMeter, gateway: SealedGateway,
                 configured_model: Path, events: Events, started_at: float | None = None) -> None:
        self.device_id = device_id
        self._core = core
        self._worker = worker
        self.governor = governor
        self.profiles = profiles
        self._profiles_dir = profiles_dir
        self._energy = energy
        self._gateway = gateway
        self._configured_model = configured_model
        self._events = events
        self._started_at = time.monotonic() if started_at is None else started_at
        self._status_sections: dict[str, Callable[[], dict[str, Any]]] = {}
        events.reload.connect(self.reload_profiles)

    def add_status_section(self, name: str, provider: Callable[[], dict[str, Any]]) -> None:
        """A part (the MQTT link, ...) adds its own counters to the status under ``name``."""
        self._status_sections[name] = provider

    def _sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {}
        for name, provider in self._status_sections.items():
            try:
                sections[name] = provider()
            except Exception as exc:  # a broken part must not take the status (and the watchdog's view) down
                logger.warning("status section could not be read", section=name, error=repr(exc))
                sections[name] = {"error": repr(exc)}
        return sections

    # ---- questions -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The full status object (`edged status`, the `status` command); JSON-ready."""
        return {"device_id": self.device_id, "version": __version__, "pid": os.getpid(),
                "uptime_s": round(time.monotonic() - self._started_at, 1), **self._core.status(),
                "profile_reason": self.governor.reason, "profile_overrides": self.governor.overrides(),
                "energy": {"total_j": round(self._energy.total_j, 3), "counters": self._energy.counters()},
                "sealed_rejects": dict(self._gateway.rejects),
                "listener_errors": dict(self._events.listener_errors), **self._sections()}

    def describe(self) -> dict[str, Any]:
        """The model and profile, for the retained MQTT birth status."""
        info = self._worker.info
        return {"model": None if info is None else {"name": info.name, "format": info.format},
                "profile": self._core.profile.name}

    def model_name(self) -> str:
        info = self._worker.info
        return info.name if info else self._configured_model.stem

    def model_state(self) -> tuple[str, str | None]:
        """ready, loading, swapping (an update switches models), unavailable (with why), or unloaded (idle)."""
        worker = self._worker
        if worker.activity is not None:
            return worker.activity, None
        if worker.info is not None:
            return "ready", None
        if worker.load_error:
            return "unavailable", worker.load_error
        return ("loading", None) if worker.settings is None else ("unloaded", None)

    def device_state(self) -> DeviceState:
        status = self._core.status()
        return DeviceState(queue_depth=status["queue"]["waiting"] + status["queue"]["running"],
                           profile=status["profile"], governor_reason=self.governor.reason)

    def power_state(self) -> PowerState:
        """The power side of the periodic telemetry record."""
        readings = self._energy.latest()
        counters = self._energy.counters()
        if readings is None:
            return PowerState()
        return PowerState(
            temperature_cel=readings.temperature_c,
            temperature_source="thermal_zone_max" if readings.temperature_c is not None else None,
            throttled_flags=readings.throttled.raw if readings.throttled is not None else None,
            power_w=readings.power_w, energy_j=self._energy.total_j if counters else None,
            # the same naming as a request's EnergyReport.source: sorted, "+"-joined
            energy_source="+".join(sorted(counters)) if counters else readings.power_source,
            energy_scope=readings.power_scope)

    def status_line(self) -> str:
        status = self._core.status()
        return (f"model {self.model_name()}, profile {status['profile']}, "
                f"{status['queue']['waiting']} waiting, {status['queue']['running']} running")

    # ---- keys ------------------------------------------------------------------------------------
    def prekey_reply(self) -> dict[str, str]:
        return self._gateway.prekey_reply()

    def prekey_record(self) -> bytes:
        return self._gateway.prekeys.current_record()

    # ---- updates ---------------------------------------------------------------------------------
    @property
    def configured_model(self) -> Path:
        """The model the daemon was started with (before any update switched slots)."""
        return self._configured_model

    def downloads_allowed(self) -> bool:
        return self._core.profile.updates.allow_downloads

    def install_state(self) -> InstallState:
        status = self._core.status()
        profile = self._core.profile
        return InstallState(busy=status["queue"]["waiting"] + status["queue"]["running"] > 0, profile=profile.name,
                            parked=profile.name == self.governor.rules.ignition_off_profile,
                            profile_allows_installs=profile.updates.allow_installs)

    # ---- power profiles --------------------------------------------------------------------------
    def override_profile(self, name: str, source: str) -> dict[str, Any]:
        """A local (socket) or remote (MQTT command) override; "auto" hands back to the governor."""
        if name != "auto" and name not in self.profiles:
            raise BadRequest(f"unknown profile {name!r}; have: auto, {', '.join(sorted(self.profiles))}")
        logger.info("profile override", profile=name, source=source)
        self.governor.set_override(None if name == "auto" else name, source)  # type: ignore[arg-type]
        self.govern()
        return {"profile": self.governor.active, "reason": self.governor.reason,
                "overrides": self.governor.overrides()}

    def govern(self) -> None:
        """Ask the governor once; a switch goes to the core with its reason."""
        decision = self.governor.decide(self._energy.latest(), time.monotonic())
        if decision.changed:
            self._core.set_profile(self.profiles[decision.profile_name], reason=decision.reason)

    def reload_profiles(self) -> None:
        """`reload` listener: re-read the profile directory; a bad file keeps the previous set."""
        self.profiles = load_profiles(self._profiles_dir)
        current = self.profiles.get(self._core.profile.name)
        if current is not None and current != self._core.profile:
            self._core.set_profile(current, reason="profiles reloaded")
        governor = Governor(self.profiles, self.governor.rules)
        for source, name in self.governor.overrides().items():
            governor.set_override(name, source)  # type: ignore[arg-type]
        self.governor = governor
        logger.info("profiles reloaded", names=sorted(self.profiles))
