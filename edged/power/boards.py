"""Board identification and the CPU-time power estimate used when no power sensor exists."""

from __future__ import annotations

import time

import structlog
from pydantic import Field

from edged.errors import SensorError
from edged.power.readings import ESTIMATE, PowerSample, checked_watts
from edged.sysfs import SysfsRoot
from edged.power.thermal import CpuSecondsClock, ProcessCpuClock
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

MODEL_FILES = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")


class BoardCoefficients(StrictModel):
    """Linear power model: ``idle_w + w_per_busy_core × busy cores of this process``.

    Rough figures from public measurements of whole boards at the supply; good enough to compare
    profiles, never to be reported as a measurement (every figure from it says ``estimate``).
    """

    board: str = Field(min_length=1, max_length=64, description="board key, e.g. pi5")
    idle_w: float = Field(ge=0, le=500, description="board power at idle, W")
    w_per_busy_core: float = Field(ge=0, le=200, description="extra W per fully busy core, W")


BOARD_TABLE: dict[str, BoardCoefficients] = {
    entry.board: entry for entry in (
        BoardCoefficients(board="pi4", idle_w=2.7, w_per_busy_core=0.9),
        BoardCoefficients(board="pi5", idle_w=2.7, w_per_busy_core=1.4),
        BoardCoefficients(board="jetson-orin", idle_w=5.0, w_per_busy_core=1.5),
        BoardCoefficients(board="generic-x86", idle_w=8.0, w_per_busy_core=6.0),
        BoardCoefficients(board="generic", idle_w=3.0, w_per_busy_core=1.5),
    )
}


def board_from_model(model: str) -> str | None:
    """Map a device-tree model string to a board key."""
    lowered = model.lower()
    if "raspberry pi 5" in lowered or "compute module 5" in lowered:
        return "pi5"
    if "raspberry pi 4" in lowered or "compute module 4" in lowered or "raspberry pi 400" in lowered:
        return "pi4"
    if "jetson" in lowered and "orin" in lowered:
        return "jetson-orin"
    return None


def read_model(sysfs: SysfsRoot) -> str | None:
    for location in MODEL_FILES:
        try:
            model = sysfs.read_text(location)
        except SensorError:
            continue
        if model:
            return model
    return None


def detect_board(sysfs: SysfsRoot) -> str:
    """``pi4``, ``pi5``, ``jetson-orin``, ``generic-x86`` or ``generic``."""
    model = read_model(sysfs)
    if model is not None:
        return board_from_model(model) or "generic"
    try:
        cpuinfo = sysfs.read_text("proc/cpuinfo", limit=1024 * 1024) or ""
    except SensorError:
        cpuinfo = ""
    if "GenuineIntel" in cpuinfo or "AuthenticAMD" in cpuinfo:
        return "generic-x86"
    return "generic"


class EstimatePowerSource:
    """Estimated power from this process's CPU time; always named ``estimate``."""

    name = ESTIMATE

    def __init__(self, coefficients: BoardCoefficients, cpu_seconds: CpuSecondsClock, cores: int) -> None:
        self.coefficients = coefficients
        self.cpu_seconds = cpu_seconds
        self.cores = max(1, cores)
        self._last: tuple[float, float] | None = None

    def read(self, now: float) -> PowerSample:
        cpu = self.cpu_seconds()
        previous, self._last = self._last, (now, cpu)
        busy_cores = 0.0
        if previous is not None and now > previous[0]:
            busy_cores = min(float(self.cores), max(0.0, (cpu - previous[1]) / (now - previous[0])))
        watts = self.coefficients.idle_w + self.coefficients.w_per_busy_core * busy_cores
        return PowerSample(ESTIMATE, ESTIMATE, checked_watts(watts, ESTIMATE))


def process_cpu_clock(sysfs: SysfsRoot) -> CpuSecondsClock:
    """``/proc/self/stat`` under the root when it is there, else Python's own process clock."""
    clock = ProcessCpuClock(sysfs)
    try:
        clock.seconds()
    except SensorError:
        return time.process_time
    return clock.seconds
