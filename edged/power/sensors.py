"""Sensor auto-detection and the ``SensorSet`` that turns one sampling pass into ``Readings``."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import structlog

from edged.errors import SensorError
from edged.power.boards import BOARD_TABLE, BoardCoefficients, EstimatePowerSource, detect_board, process_cpu_clock
from edged.power.hwmon import find_ina2xx, find_ina3221
from edged.power.rapl import find_rapl
from edged.power.raspberrypi import CommandRunner, PmicReader, ThrottleReader, default_runner
from edged.power.readings import PowerSample, PowerSource, Readings, ThrottleState
from edged.power.supply import BatteryPowerSource, PowerSupplies, SupplySummary
from edged.sysfs import SysfsRoot
from edged.power.thermal import CPU_DEVICES, CpuFreqReader, CpuSecondsClock, CpuStatReader, ThermalReader

logger = structlog.get_logger(__name__)

T = TypeVar("T")


@dataclass
class SensorSet:
    """The sensors found on this board. ``power_sources`` are in order of preference and always end
    with the estimate, so a figure exists even when every real sensor fails."""

    board: str
    power_sources: list[PowerSource]
    thermal: ThermalReader | None = None
    throttle: ThrottleReader | None = None
    supplies: PowerSupplies | None = None
    cpu_load: CpuStatReader | None = None
    cpu_freq: CpuFreqReader | None = None
    _errors: list[str] = field(default_factory=list, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "board": self.board,
            "power_sources": [source.name for source in self.power_sources],
            "thermal_zones": 0 if self.thermal is None else len(self.thermal.zones),
            "throttle_bits": self.throttle is not None,
            "power_supplies": [] if self.supplies is None else [r.name for r in self.supplies.readers],
        }

    def _try(self, what: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except SensorError as exc:
            self._errors.append(f"{what}: {exc}")
            return None

    def _power(self, now: float) -> PowerSample | None:
        for source in self.power_sources:
            try:
                sample = source.read(now)
            except SensorError as exc:
                self._errors.append(f"{source.name}: {exc}")
                continue
            if sample.power_w is not None:
                return sample
        return None

    def read(self, now: float) -> Readings:
        """One pass over every sensor; a failing sensor becomes an entry in ``errors``, never a crash."""
        self._errors = []
        thermal = None if self.thermal is None else self.thermal.read()
        if thermal is not None:
            self._errors.extend(thermal.errors)
        throttle: ThrottleState | None = None
        if self.throttle is not None:
            throttle = self._try("get_throttled", partial(self.throttle.read, now))
        summary: SupplySummary | None = None
        if self.supplies is not None:
            summary = self._try("power_supply", partial(self.supplies.summary, now))
        sample = self._power(now)
        supply_voltage = None if sample is None else sample.supply_voltage_v
        return Readings(
            at=now,
            temperature_c=None if thermal is None else thermal.max_c,
            throttled=throttle,
            battery_percent=None if summary is None else summary.battery_percent,
            charging=None if summary is None else summary.charging,
            on_battery=None if summary is None else summary.on_battery,
            ignition_on=None if summary is None else summary.ignition_on,
            supply_voltage_v=supply_voltage,
            power_w=None if sample is None else sample.power_w,
            power_source=None if sample is None else sample.source,
            power_scope=None if sample is None else sample.scope,
            energy_j=None if sample is None else sample.energy_j,
            cpu_utilization=None if self.cpu_load is None else self._try("/proc/stat", self.cpu_load.read),
            cpu_freq_mhz=None if self.cpu_freq is None else self._try("cpufreq", self.cpu_freq.read),
            errors=tuple(self._errors),
        )


def _probe(what: str, find: Callable[[], T]) -> T | None:
    """Run one detection step; a sensor that cannot even be probed is logged and left out."""
    try:
        return find()
    except SensorError as exc:
        logger.warning("sensor probe failed", sensor=what, error=str(exc))
        return None


def _count_cores(sysfs: SysfsRoot) -> int:
    cores = [cpu for cpu in sysfs.glob(CPU_DEVICES, "cpu*") if re.fullmatch(r"cpu\d+", cpu.name)]
    return len(cores) or os.cpu_count() or 1


def detect(root: Path | str = "/", runner: CommandRunner | None = None, *, board: str | None = None,
           coefficients: BoardCoefficients | None = None, ignition_supply: str | None = None,
           cpu_seconds: CpuSecondsClock | None = None, command_period_s: float = 1.0,
           now: float | None = None) -> SensorSet:
    """Find every sensor under ``root`` and log the result once.

    ``runner`` runs ``vcgencmd``; when ``None`` the real one is used only for the real root ``/``.
    ``board``/``coefficients`` override the detected board and its estimate coefficients;
    ``ignition_supply`` names the power_supply that is online only with the ignition on.
    ``now`` must be on the clock later passed to ``SensorSet.read`` (default ``time.monotonic``),
    because probing takes the first reading of counters such as RAPL.
    """
    now = time.monotonic() if now is None else now
    sysfs = SysfsRoot(root)
    if runner is None and sysfs.root == Path("/"):
        runner = default_runner()
    board_key = board or detect_board(sysfs)
    estimate_coefficients = coefficients or BOARD_TABLE.get(board_key, BOARD_TABLE["generic"])
    sources: list[PowerSource] = []

    def add_if_readable(source: PowerSource | None) -> None:
        # A source that exists but cannot be read (RAPL is root-only since Linux 5.10) is useless.
        if source is not None and _probe(source.name, partial(source.read, now)) is not None:
            sources.append(source)

    for reader in _probe("ina2xx", partial(find_ina2xx, sysfs)) or []:
        add_if_readable(reader)
    add_if_readable(_probe("ina3221", partial(find_ina3221, sysfs)))
    throttle = None
    if runner is not None:
        add_if_readable(PmicReader(runner, command_period_s))
        candidate = ThrottleReader(runner, command_period_s)
        throttle = candidate if _probe("get_throttled", partial(candidate.read, now)) is not None else None
    supplies = _probe("power_supply", partial(PowerSupplies.find, sysfs, ignition_supply))
    if supplies is not None and supplies.has_battery():
        # Kept even when not discharging right now: the sensor set falls through to the next source.
        sources.append(BatteryPowerSource(supplies))
    add_if_readable(_probe("rapl", partial(find_rapl, sysfs)))
    clock = cpu_seconds or process_cpu_clock(sysfs)
    sources.append(EstimatePowerSource(estimate_coefficients, clock, _count_cores(sysfs)))
    thermal = ThermalReader(sysfs)
    cpu_freq = CpuFreqReader(sysfs)
    sensors = SensorSet(
        board=board_key, power_sources=sources,
        thermal=thermal if thermal.zones else None, throttle=throttle, supplies=supplies,
        cpu_load=CpuStatReader(sysfs) if sysfs.exists("proc/stat") else None,
        cpu_freq=cpu_freq if cpu_freq.files else None)
    logger.info("power sensors detected", root=str(sysfs.root), **sensors.describe())
    return sensors
