"""Intel/AMD RAPL energy counters under ``/sys/class/powercap`` (µJ, wrapping)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edged.errors import SensorError
from edged.power.readings import PowerSample, checked_watts
from edged.sysfs import SysfsRoot

POWERCAP_CLASS = "sys/class/powercap"


@dataclass
class _Zone:
    directory: Path
    max_range_uj: int | None
    last_uj: int | None = None


class RaplReader:
    """Sums the top-level RAPL zones into one monotonic J counter, undoing each zone's wraparound.

    Power is the counter delta over the time since the previous read, so the first read has none.
    A ``psys`` (platform) zone already contains the packages, so when present it is used alone.
    """

    name = "rapl"

    def __init__(self, sysfs: SysfsRoot, zones: list[Path]) -> None:
        if not zones:
            raise SensorError("rapl reader needs at least one zone")
        self.sysfs = sysfs
        self.zones = [_Zone(zone, sysfs.read_int(zone / "max_energy_range_uj")) for zone in zones]
        self.scope = "platform" if any(self._zone_name(z.directory) == "psys" for z in self.zones) else "cpu_package"
        self.total_j = 0.0
        self._last_time: float | None = None

    def _zone_name(self, directory: Path) -> str | None:
        return self.sysfs.read_text(directory / "name")

    def _delta_uj(self, zone: _Zone, value: int) -> int:
        if zone.max_range_uj is not None and value > zone.max_range_uj:
            raise SensorError(f"{zone.directory}/energy_uj: {value} exceeds max_energy_range_uj")
        if zone.last_uj is None:
            return 0
        if value >= zone.last_uj:
            return value - zone.last_uj
        if zone.max_range_uj is None:
            raise SensorError(f"{zone.directory}: counter went backwards and no max_energy_range_uj")
        return zone.max_range_uj - zone.last_uj + value

    def read(self, now: float) -> PowerSample:
        values = []
        for zone in self.zones:
            value = self.sysfs.read_int(zone.directory / "energy_uj")
            if value is None or value < 0:
                raise SensorError(f"{zone.directory}/energy_uj: missing or negative")
            values.append(value)
        # Compute every delta before committing any, so one bad zone does not skew the others.
        delta_uj = sum(self._delta_uj(zone, value) for zone, value in zip(self.zones, values, strict=True))
        elapsed = None if self._last_time is None else now - self._last_time
        for zone, value in zip(self.zones, values, strict=True):
            zone.last_uj = value
        self._last_time = now
        power = None
        if elapsed is not None and elapsed > 0:
            # Checked before it is added, so a glitched delta never enters the counter.
            power = checked_watts(delta_uj / 1e6 / elapsed, "rapl")
        self.total_j += delta_uj / 1e6
        return PowerSample(self.name, self.scope, power, energy_j=self.total_j)


def find_rapl(sysfs: SysfsRoot) -> RaplReader | None:
    """Top-level zones only (``intel-rapl:N``); subzones ``intel-rapl:N:M`` are inside them."""
    zones = [path for path in sysfs.glob(POWERCAP_CLASS, "intel-rapl:*")
             if re.fullmatch(r"intel-rapl:\d+", path.name) and sysfs.exists(path / "energy_uj")]
    if not zones:
        return None
    psys = [zone for zone in zones if sysfs.read_text(zone / "name") == "psys"]
    return RaplReader(sysfs, psys or zones)
