"""What the device reports about itself between requests: plain values the control port builds.

Ground floor on purpose: telemetry, presence and other transports read these without importing the
parts (core, governor, energy meter) that produce them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The core and governor at one moment."""

    queue_depth: int  # waiting + running
    profile: str
    governor_reason: str


@dataclass(frozen=True, slots=True)
class InstallState:
    """What the update service's install policy asks before it installs a downloaded release."""

    busy: bool  # a request is running or queued
    profile: str  # the active power profile
    parked: bool  # that profile is the governor's parked one (its ignition_off_profile)
    profile_allows_installs: bool  # the profile's [updates] allow_installs


@dataclass(frozen=True, slots=True)
class PowerState:
    """The power side of a device record; energy figures always name their source and scope."""

    temperature_cel: float | None = None
    temperature_source: str | None = None
    throttled_flags: int | None = None
    power_w: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    energy_scope: str | None = None
