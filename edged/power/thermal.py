"""Thermal zones (m°C) and CPU load/frequency from sysfs and procfs."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from edged.errors import SensorError
from edged.sysfs import MAX_PROC_BYTES, SysfsRoot, parse_int

THERMAL_CLASS = "sys/class/thermal"
CPU_DEVICES = "sys/devices/system/cpu"
# Outside this range a zone is broken or lying (some report -273 °C or 0x7fffffff when off).
MIN_PLAUSIBLE_C = -60.0
MAX_PLAUSIBLE_C = 150.0


@dataclass(frozen=True)
class ThermalSnapshot:
    max_c: float | None
    zones: dict[str, float]
    errors: tuple[str, ...]


class ThermalReader:
    """Reads every ``thermal_zone*/temp``; unreadable or implausible zones are reported, not fatal."""

    def __init__(self, sysfs: SysfsRoot) -> None:
        self.sysfs = sysfs
        self.zones = sysfs.glob(THERMAL_CLASS, "thermal_zone*")

    def read(self) -> ThermalSnapshot:
        temperatures: dict[str, float] = {}
        errors: list[str] = []
        for zone in self.zones:
            try:
                millidegrees = self.sysfs.read_int(zone / "temp")
                kind = self.sysfs.read_text(zone / "type") or zone.name
            except SensorError as exc:
                errors.append(str(exc))
                continue
            if millidegrees is None:
                continue
            celsius = millidegrees / 1000
            if not MIN_PLAUSIBLE_C <= celsius <= MAX_PLAUSIBLE_C:
                errors.append(f"{zone}/temp: implausible {celsius:.1f} °C")
                continue
            temperatures[f"{kind}:{zone.name}"] = celsius
        hottest = max(temperatures.values()) if temperatures else None
        return ThermalSnapshot(hottest, temperatures, tuple(errors))


class CpuStatReader:
    """Busy fraction of all CPUs between two reads of the aggregate ``cpu`` line of ``/proc/stat``."""

    def __init__(self, sysfs: SysfsRoot) -> None:
        self.sysfs = sysfs
        self._last: tuple[int, int] | None = None

    def read(self) -> float | None:
        text = self.sysfs.read_text("proc/stat", limit=MAX_PROC_BYTES)
        if text is None:
            return None
        line = next((row for row in text.splitlines() if row.startswith("cpu ")), None)
        if line is None:
            raise SensorError("/proc/stat: no aggregate cpu line")
        ticks = [parse_int(field, "/proc/stat") for field in line.split()[1:]]
        if len(ticks) < 4 or min(ticks) < 0:
            raise SensorError("/proc/stat: malformed cpu line")
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        total = sum(ticks[:8])  # guest time is already inside user/nice
        previous, self._last = self._last, (total, idle)
        if previous is None or total <= previous[0]:
            return None
        busy = (total - previous[0]) - (idle - previous[1])
        return min(1.0, max(0.0, busy / (total - previous[0])))


class CpuFreqReader:
    """Highest ``scaling_cur_freq`` (kHz) across CPUs, in MHz."""

    def __init__(self, sysfs: SysfsRoot) -> None:
        self.sysfs = sysfs
        self.files = [cpu / "cpufreq" / "scaling_cur_freq" for cpu in sysfs.glob(CPU_DEVICES, "cpu*")
                      if re.fullmatch(r"cpu\d+", cpu.name) and sysfs.exists(cpu / "cpufreq" / "scaling_cur_freq")]

    def read(self) -> float | None:
        values = [self.sysfs.read_int(path) for path in self.files]
        known = [value for value in values if value is not None and 0 < value < 100_000_000]
        return max(known) / 1000 if known else None


class ProcessCpuClock:
    """This process's user+system CPU seconds from ``/proc/self/stat`` under the root."""

    def __init__(self, sysfs: SysfsRoot, ticks_per_second: int | None = None) -> None:
        self.sysfs = sysfs
        self.ticks_per_second = ticks_per_second or os.sysconf("SC_CLK_TCK")

    def seconds(self) -> float:
        text = self.sysfs.read_text("proc/self/stat")
        if text is None:
            raise SensorError("/proc/self/stat: missing")
        # The command name may contain spaces and parentheses; the fields start after the last ')'.
        fields = text.rpartition(")")[2].split()
        if len(fields) < 13:
            raise SensorError("/proc/self/stat: too few fields")
        utime, stime = parse_int(fields[11], "/proc/self/stat"), parse_int(fields[12], "/proc/self/stat")
        return (utime + stime) / self.ticks_per_second


CpuSecondsClock = Callable[[], float]
