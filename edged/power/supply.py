"""Batteries and external supplies under ``/sys/class/power_supply`` (µV, µA, µW, %)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edged.errors import SensorError
from edged.power.readings import PowerSample, checked_watts
from edged.sysfs import SysfsRoot

POWER_SUPPLY_CLASS = "sys/class/power_supply"
EXTERNAL_TYPES = frozenset({"Mains", "USB", "USB_C", "USB_PD", "USB_DCP", "USB_CDP", "USB_ACA"})


@dataclass(frozen=True)
class SupplyState:
    """One ``power_supply`` entry as read right now."""

    name: str
    kind: str
    online: bool | None
    status: str | None
    capacity_percent: int | None
    power_w: float | None

    @property
    def is_battery(self) -> bool:
        return self.kind == "Battery"

    @property
    def is_external(self) -> bool:
        return self.kind in EXTERNAL_TYPES


class PowerSupplyReader:
    """Reads one ``/sys/class/power_supply/<name>/`` directory."""

    def __init__(self, sysfs: SysfsRoot, directory: Path) -> None:
        self.sysfs = sysfs
        self.directory = directory
        self.name = directory.name

    def state(self) -> SupplyState:
        kind = self.sysfs.read_text(self.directory / "type") or "Unknown"
        online = self.sysfs.read_int(self.directory / "online")
        capacity = self.sysfs.read_int(self.directory / "capacity")
        if capacity is not None and not 0 <= capacity <= 100:
            raise SensorError(f"{self.directory}/capacity: {capacity} is not a percentage")
        return SupplyState(
            name=self.name, kind=kind, online=None if online is None else online != 0,
            status=self.sysfs.read_text(self.directory / "status"),
            capacity_percent=capacity, power_w=self._power_w())

    def _power_w(self) -> float | None:
        power_uw = self.sysfs.read_int(self.directory / "power_now")
        if power_uw is not None:
            return checked_watts(abs(power_uw) / 1e6, f"{self.directory}/power_now")
        voltage_uv = self.sysfs.read_int(self.directory / "voltage_now")
        current_ua = self.sysfs.read_int(self.directory / "current_now")
        if voltage_uv is None or current_ua is None:
            return None
        # Drivers disagree on the sign of a discharging current; the magnitude is what flows.
        return checked_watts(abs(voltage_uv) * abs(current_ua) / 1e12, f"{self.directory}/current_now")


@dataclass(frozen=True)
class SupplySummary:
    """What the governor needs to know about supplies."""

    battery_percent: float | None
    charging: bool | None
    on_battery: bool | None
    ignition_on: bool | None
    battery_power_w: float | None
    """Battery draw while discharging: then it is the whole system's draw."""


class PowerSupplies:
    """All supplies of the board, summarised; ``ignition_supply`` names the supply that is online
    only while the vehicle ignition is on (e.g. a Mains/USB supply fed from the switched line)."""

    def __init__(self, sysfs: SysfsRoot, readers: list[PowerSupplyReader], ignition_supply: str | None) -> None:
        self.sysfs = sysfs
        self.readers = readers
        self.ignition_supply = ignition_supply
        self._cached: tuple[float, SupplySummary] | None = None

    @classmethod
    def find(cls, sysfs: SysfsRoot, ignition_supply: str | None = None) -> PowerSupplies | None:
        readers = [PowerSupplyReader(sysfs, path) for path in sysfs.glob(POWER_SUPPLY_CLASS, "*")]
        return cls(sysfs, readers, ignition_supply) if readers else None

    def has_battery(self) -> bool:
        """True when any supply is a battery (probing only; an unreadable type counts as not)."""
        for reader in self.readers:
            try:
                if self.sysfs.read_text(reader.directory / "type") == "Battery":
                    return True
            except SensorError:
                continue
        return False

    def summary(self, now: float | None = None) -> SupplySummary:
        """Raises ``SensorError`` when any supply cannot be read (the caller records it).

        With ``now``, a second call for the same sampling pass reuses the first answer.
        """
        if now is not None and self._cached is not None and self._cached[0] == now:
            return self._cached[1]
        summary = self._read_summary()
        if now is not None:
            self._cached = (now, summary)
        return summary

    def _read_summary(self) -> SupplySummary:
        states = [reader.state() for reader in self.readers]
        batteries = [state for state in states if state.is_battery]
        externals = [state for state in states if state.is_external and state.online is not None]
        percents = [state.capacity_percent for state in batteries if state.capacity_percent is not None]
        statuses = {state.status for state in batteries}
        charging = ("Charging" in statuses) if batteries else None
        if externals:
            on_battery: bool | None = bool(batteries) and not any(state.online for state in externals)
        elif batteries:
            on_battery = statuses == {"Discharging"}
        else:
            on_battery = None
        ignition = next((state.online for state in states if state.name == self.ignition_supply), None)
        discharging = [state for state in batteries if state.status == "Discharging"]
        draws = [state.power_w for state in discharging if state.power_w is not None]
        return SupplySummary(
            battery_percent=sum(percents) / len(percents) if percents else None,
            charging=charging, on_battery=on_battery, ignition_on=ignition,
            battery_power_w=sum(draws) if draws and len(draws) == len(discharging) else None)


class BatteryPowerSource:
    """The battery's own power figure, usable only while it discharges (then it is the system draw)."""

    name = "battery"

    def __init__(self, supplies: PowerSupplies) -> None:
        self.supplies = supplies

    def read(self, now: float) -> PowerSample:
        return PowerSample(self.name, "battery", self.supplies.summary(now).battery_power_w)
