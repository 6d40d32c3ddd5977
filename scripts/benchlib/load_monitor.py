"""Is the machine idle? Numbers from a busy machine are noise, so the report must say when it was not.

Two signals:
  * the 1-minute load average when the run starts (before the benchmark adds any load itself);
  * during the run, CPU time spent by processes outside the benchmark's own process tree:
    machine-wide busy time from /proc/stat minus the CPU time of the benchmark and its descendants.
    Using the machine-wide counter catches short-lived processes (compilers, test runs) that a scan of
    /proc/PID/stat would miss, and it counts steal time (other tenants of a VM) as "other".
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchlib.procs import CLOCK_TICKS, stat_fields

START_LOADAVG_LIMIT = 0.5      # 1-min load average above this at the start: not idle
MEAN_OTHER_CPU_LIMIT = 0.10    # other processes used more than 0.10 cores on average during the run
PEAK_OTHER_CPU_LIMIT = 0.50    # ... or more than half a core over any one sampling interval
SAMPLE_INTERVAL_S = 1.0


def load_average_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_busy_ticks() -> int:
    """Busy clock ticks of all CPUs: user nice system irq softirq steal (guest is inside user)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return user + nice + system + irq + softirq + steal


def own_tree_ticks(root: int) -> int:
    """CPU ticks of `root` and all its live descendants, including the children they already reaped."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = stat_fields(entry.name)
        if fields is None:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        ticks[pid] = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    total = 0
    for pid in ticks:
        walk = pid
        while walk > 1 and walk != root:
            walk = parents.get(walk, 0)
        if walk == root:
            total += ticks[pid]
    return total


@dataclass
class LoadReport:
    start_loadavg: float
    max_loadavg: float
    mean_other_cores: float          # CPU cores used by other processes, averaged over the run
    peak_other_cores: float          # the same over the worst sampling interval
    duration_s: float
    warnings: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not self.warnings


class LoadMonitor:
    """Samples in a background thread from start() to stop(); stop() returns the verdict."""

    def __init__(self) -> None:
        self._root = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)
        self._other_cores: list[float] = []
        self._loadavgs: list[float] = []
        self._start_loadavg = 0.0
        self._started = 0.0

    def start(self, start_loadavg: float | None = None) -> float:
        """Begin sampling. `start_loadavg`: read before the benchmark's own set-up (a build) loaded the machine."""
        self._start_loadavg = load_average_1min() if start_loadavg is None else start_loadavg
        self._started = time.monotonic()
        self._thread.start()
        return self._start_loadavg

    def _run(self) -> None:
        last_busy, last_own, last_at = machine_busy_ticks(), own_tree_ticks(self._root), time.monotonic()
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            busy, own, now = machine_busy_ticks(), own_tree_ticks(self._root), time.monotonic()
            other_ticks = max(0, (busy - last_busy) - (own - last_own))
            self._other_cores.append(other_ticks / CLOCK_TICKS / max(now - last_at, 1e-3))
            self._loadavgs.append(load_average_1min())
            last_busy, last_own, last_at = busy, own, now

    def stop(self) -> LoadReport:
        self._stop.set()
        self._thread.join()
        samples = self._other_cores or [0.0]
        report = LoadReport(start_loadavg=self._start_loadavg,
                            max_loadavg=max(self._loadavgs or [self._start_loadavg]),
                            mean_other_cores=sum(samples) / len(samples), peak_other_cores=max(samples),
                            duration_s=time.monotonic() - self._started)
        if report.start_loadavg > START_LOADAVG_LIMIT:
            report.warnings.append(f"1-minute load average was {report.start_loadavg:.2f} at the start "
                                   f"(limit {START_LOADAVG_LIMIT})")
        if report.mean_other_cores > MEAN_OTHER_CPU_LIMIT:
            report.warnings.append(f"other processes used {report.mean_other_cores:.2f} CPU cores on average "
                                   f"during the run (limit {MEAN_OTHER_CPU_LIMIT})")
        if report.peak_other_cores > PEAK_OTHER_CPU_LIMIT:
            report.warnings.append(f"other processes used up to {report.peak_other_cores:.2f} CPU cores over "
                                   f"a {SAMPLE_INTERVAL_S:.0f} s interval (limit {PEAK_OTHER_CPU_LIMIT})")
        return report
