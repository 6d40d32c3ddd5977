"""Process and system readings from procfs (memory, CPU utilisation, uptime) through a movable root."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from edged.errors import SensorError
from edged.sysfs import MAX_PROC_BYTES, SysfsRoot

logger = structlog.get_logger(__name__)

KIB: Final = 1024
# /proc/self/stat fields after the ")" that ends comm: index 0 is field 3 (state).
_UTIME, _STIME, _STARTTIME = 11, 12, 19


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One reading; ``None`` means the source was missing or malformed (never an exception)."""

    uptime_s: float | None
    rss_bytes: int | None
    rss_peak_bytes: int | None
    memory_total_bytes: int | None
    memory_available_bytes: int | None
    process_cpu_utilization: float | None
    system_cpu_utilization: float | None


def _kib_fields(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """``Name:   123 kB`` lines of /proc/self/status or /proc/meminfo, converted to bytes."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB" and parts[0].isdigit():
                found[key] = int(parts[0]) * KIB
    return found


def _available_cpus() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class ProcSampler:
    """Reads ``/proc/self/status``, ``/proc/self/stat``, ``/proc/stat``, ``/proc/meminfo``, ``/proc/uptime``.

    CPU utilisation is the change since the previous call of the same reader, so the first call
    returns ``None``. All readers are safe to call from any thread.
    """

    def __init__(self, root: SysfsRoot | Path | str = "/", *, clock: Callable[[], float] = time.monotonic,
                 clock_ticks_per_s: int | None = None, cpu_count: int | None = None) -> None:
        self._root = root if isinstance(root, SysfsRoot) else SysfsRoot(root)
        self._clock = clock
        self._ticks_per_s = clock_ticks_per_s or os.sysconf("SC_CLK_TCK")
        self._cpus = cpu_count or _available_cpus()
        self._lock = threading.Lock()
        self._last_process_cpu: tuple[float, float] | None = None  # (wall s, cpu s)
        self._last_system_cpu: tuple[int, int] | None = None  # (busy ticks, total ticks)

    def _read(self, location: str) -> str | None:
        try:
            return self._root.read_text(location, limit=MAX_PROC_BYTES)
        except SensorError as exc:
            logger.debug("procfs read failed", path=location, error=str(exc))
            return None

    def _stat_fields(self) -> list[str] | None:
        text = self._read("/proc/self/stat")
        if text is None or ")" not in text:
            return None
        # comm (field 2) may hold spaces and parentheses; everything after the last ")" is numeric.
        fields = text.rsplit(")", 1)[1].split()
        if len(fields) <= _STARTTIME or not all(fields[i].isdigit() for i in (_UTIME, _STIME, _STARTTIME)):
            return None
        return fields

    def process_memory(self) -> tuple[int | None, int | None]:
        """(VmRSS, VmHWM) in bytes."""
        text = self._read("/proc/self/status")
        found = _kib_fields(text, ("VmRSS", "VmHWM")) if text is not None else {}
        return found.get("VmRSS"), found.get("VmHWM")

    def system_memory(self) -> tuple[int | None, int | None]:
        """(MemTotal, MemAvailable) in bytes."""
        text = self._read("/proc/meminfo")
        found = _kib_fields(text, ("MemTotal", "MemAvailable")) if text is not None else {}
        return found.get("MemTotal"), found.get("MemAvailable")

    def process_uptime_s(self) -> float | None:
        """Seconds since this process started: system uptime minus the process start time."""
        fields = self._stat_fields()
        uptime = self._read("/proc/uptime")
        if fields is None or uptime is None:
            return None
        try:
            system_uptime = float(uptime.split()[0])
        except (IndexError, ValueError):
            return None
        started = int(fields[_STARTTIME]) / self._ticks_per_s
        return max(system_uptime - started, 0.0)

    def process_cpu_utilization(self) -> float | None:
        """Share (0..1) of the CPUs available to the process used since the previous call."""
        fields = self._stat_fields()
        if fields is None:
            return None
        cpu_s = (int(fields[_UTIME]) + int(fields[_STIME])) / self._ticks_per_s
        now = self._clock()
        with self._lock:
            previous, self._last_process_cpu = self._last_process_cpu, (now, cpu_s)
        if previous is None:
            return None
        wall, used = now - previous[0], cpu_s - previous[1]
        if wall <= 0 or used < 0:
            return None
        return min(used / (wall * self._cpus), 1.0)

    def system_cpu_utilization(self) -> float | None:
        """Busy share (0..1) of all CPUs since the previous call, from the ``cpu`` line of /proc/stat."""
        text = self._read("/proc/stat")
        if text is None:
            return None
        parts = text.splitlines()[0].split() if text else []
        if len(parts) < 5 or parts[0] != "cpu" or not all(p.isdigit() for p in parts[1:]):
            return None
        ticks = [int(p) for p in parts[1:9]]  # user nice system idle iowait irq softirq steal; guest is in user
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        total = sum(ticks)
        with self._lock:
            previous, self._last_system_cpu = self._last_system_cpu, (total - idle, total)
        if previous is None:
            return None
        busy, elapsed = total - idle - previous[0], total - previous[1]
        if elapsed <= 0 or busy < 0:
            return None
        return min(busy / elapsed, 1.0)

    def sample(self) -> ProcessSample:
        """Every reading at once (the periodic device record calls this)."""
        rss, peak = self.process_memory()
        total, available = self.system_memory()
        return ProcessSample(uptime_s=self.process_uptime_s(), rss_bytes=rss, rss_peak_bytes=peak,
                             memory_total_bytes=total, memory_available_bytes=available,
                             process_cpu_utilization=self.process_cpu_utilization(),
                             system_cpu_utilization=self.system_cpu_utilization())
