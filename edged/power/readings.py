"""Value types shared by the sensor readers, the energy meter and the governor."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from edged.errors import SensorError

ESTIMATE = "estimate"
# No edge board draws a kilowatt; a bigger figure is a misread register or a hostile file.
MAX_PLAUSIBLE_W = 1000.0


def checked_watts(watts: float, where: str) -> float:
    """Reject negative or absurd power figures instead of feeding them to the meter."""
    if not 0.0 <= watts <= MAX_PLAUSIBLE_W:
        raise SensorError(f"{where}: implausible power {watts:.3f} W")
    return watts


@dataclass(frozen=True)
class ThrottleState:
    """Raspberry Pi firmware throttling bits (``vcgencmd get_throttled``)."""

    raw: int
    under_voltage: bool
    freq_capped: bool
    throttled: bool
    soft_temp_limit: bool
    under_voltage_occurred: bool
    freq_capped_occurred: bool
    throttled_occurred: bool
    soft_temp_limit_occurred: bool

    @classmethod
    def from_bits(cls, raw: int) -> ThrottleState:
        def bit(n: int) -> bool:
            return bool(raw >> n & 1)

        return cls(raw, bit(0), bit(1), bit(2), bit(3), bit(16), bit(17), bit(18), bit(19))

    @property
    def thermally_limited(self) -> bool:
        """The SoC is slowed down right now (frequency capped, throttled or soft limit)."""
        return self.freq_capped or self.throttled or self.soft_temp_limit


@dataclass(frozen=True)
class PowerSample:
    """One reading of one power source."""

    source: str
    """Sensor name (``ina219``, ``ina3221``, ``rpi5_pmic``, ``battery``, ``rapl``) or ``estimate``."""
    scope: str
    """What the figure covers: ``board_input``, ``pmic_rails``, ``battery``, ``cpu_package``, ``estimate``."""
    power_w: float | None
    """Instantaneous power; ``None`` when the source has nothing to say right now."""
    energy_j: float | None = None
    """Monotonic energy counter in J, only for sources that keep one (RAPL)."""
    supply_voltage_v: float | None = None

    @property
    def estimated(self) -> bool:
        return self.source == ESTIMATE


class PowerSource(Protocol):
    """A reader the sensor set can ask for power; ``read`` raises ``SensorError`` on failure."""

    name: str

    def read(self, now: float) -> PowerSample: ...


@dataclass(frozen=True)
class Readings:
    """Everything the sensors said in one sampling pass; unknown values are ``None``."""

    at: float
    """Monotonic time of the sample."""
    temperature_c: float | None
    """Hottest readable thermal zone."""
    throttled: ThrottleState | None
    battery_percent: float | None
    charging: bool | None
    on_battery: bool | None
    """Running from a battery with no external supply online."""
    ignition_on: bool | None
    """Vehicle ignition (the configured ignition supply is online); ``None`` when not configured."""
    supply_voltage_v: float | None
    power_w: float | None
    power_source: str | None
    """Name of the source that gave ``power_w``; ``estimate`` for the CPU-time model."""
    power_scope: str | None
    energy_j: float | None
    """The source's own energy counter in J, when it has one."""
    cpu_utilization: float | None = None
    """Busy fraction of all CPUs since the previous sample (0..1)."""
    cpu_freq_mhz: float | None = None
    """Highest current CPU frequency."""
    errors: tuple[str, ...] = ()
    """Sensors that failed during this pass, one short message each."""

    @property
    def power_estimated(self) -> bool:
        return self.power_source == ESTIMATE

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form for telemetry and the hardware report."""
        data = asdict(self)
        data["throttled"] = None if self.throttled is None else hex(self.throttled.raw)
        data["errors"] = list(self.errors)
        data["power_estimated"] = self.power_estimated
        return data
