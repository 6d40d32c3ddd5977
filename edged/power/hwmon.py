"""INA2xx and INA3221 power monitors through hwmon (and the older Jetson iio layout)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edged.errors import SensorError
from edged.power.readings import PowerSample, checked_watts
from edged.sysfs import SysfsRoot

INA2XX_CHIPS = frozenset({"ina219", "ina220", "ina226", "ina230", "ina231"})
# Rails that carry the whole board's input; when one exists it alone is the board figure,
# because the other rails are already inside it.
BOARD_INPUT_RAILS = frozenset({"VDD_IN", "VIN", "POM_5V_IN"})
HWMON_CLASS = "sys/class/hwmon"
IIO_DEVICES = "sys/bus/iio/devices"
I2C_DEVICES = "sys/bus/i2c/devices"


class Ina2xxReader:
    """One INA219/220/226/230/231 on I²C: ``power1_input`` µW, else ``curr1_input`` mA × ``in1_input`` mV."""

    def __init__(self, sysfs: SysfsRoot, directory: Path, chip: str) -> None:
        self.sysfs = sysfs
        self.directory = directory
        self.name = chip

    def read(self, now: float) -> PowerSample:
        bus_mv = self.sysfs.read_int(self.directory / "in1_input")
        power_uw = self.sysfs.read_int(self.directory / "power1_input")
        if power_uw is not None:
            watts = power_uw / 1e6
        else:
            current_ma = self.sysfs.read_int(self.directory / "curr1_input")
            if current_ma is None or bus_mv is None:
                raise SensorError(f"{self.directory}: neither power1_input nor curr1_input and in1_input")
            # The sign of the current depends on how the shunt was wired; the magnitude is the draw.
            watts = abs(current_ma) * bus_mv / 1e6
        volts = None if bus_mv is None else bus_mv / 1000
        return PowerSample(self.name, "board_input", checked_watts(watts, str(self.directory)),
                           supply_voltage_v=volts)


@dataclass(frozen=True)
class Rail:
    """One INA3221 channel: bus mV and current mA, or a ready power figure in mW (iio layout)."""

    label: str
    voltage_file: Path
    current_file: Path
    power_file: Path | None = None

    def read(self, sysfs: SysfsRoot) -> tuple[float, float | None]:
        """(watts, volts) of this rail."""
        millivolts = sysfs.read_int(self.voltage_file)
        power = None if self.power_file is None else sysfs.read_int(self.power_file)
        if power is not None:
            milliwatts = float(power)
        else:
            milliamps = sysfs.read_int(self.current_file)
            if milliamps is None or millivolts is None:
                raise SensorError(f"{self.current_file.parent}: rail {self.label} has no readings")
            milliwatts = abs(milliamps) * millivolts / 1000
        volts = None if millivolts is None else millivolts / 1000
        return checked_watts(milliwatts / 1000, f"rail {self.label}"), volts


class Ina3221Reader:
    """Jetson INA3221 rails: the board input rail when there is one, else the sum of all rails."""

    name = "ina3221"

    def __init__(self, sysfs: SysfsRoot, rails: list[Rail]) -> None:
        if not rails:
            raise SensorError("ina3221 reader needs at least one rail")
        self.sysfs = sysfs
        inputs = [rail for rail in rails if rail.label.upper() in BOARD_INPUT_RAILS]
        self.rails = inputs[:1] or rails
        self.scope = "board_input" if inputs else "rail_sum"

    def read(self, now: float) -> PowerSample:
        total = 0.0
        volts: float | None = None
        for rail in self.rails:
            watts, rail_volts = rail.read(self.sysfs)
            total += watts
            volts = rail_volts if self.scope == "board_input" else None
        return PowerSample(self.name, self.scope, checked_watts(total, "ina3221 rails"), supply_voltage_v=volts)


def chip_name(sysfs: SysfsRoot, directory: Path) -> str | None:
    """The ``name`` attribute of a hwmon/iio device; an unreadable one just means "not ours"."""
    try:
        return sysfs.read_text(directory / "name")
    except SensorError:
        return None


def _skip_label(label: str) -> bool:
    # Unconnected channels are labelled NC on Jetson carrier boards (jetson_stats skips them too).
    return not label or label.upper() == "NC" or label.upper().startswith("NC ")


def find_ina2xx(sysfs: SysfsRoot) -> list[Ina2xxReader]:
    readers = []
    for directory in sysfs.glob(HWMON_CLASS, "hwmon*"):
        chip = chip_name(sysfs, directory)
        if chip in INA2XX_CHIPS:
            readers.append(Ina2xxReader(sysfs, directory, chip))
    return readers


def _hwmon_rails(sysfs: SysfsRoot, directory: Path) -> list[Rail]:
    rails = []
    for channel in (1, 2, 3):  # in7/curr4 are the chip's own sums: reading them would double count
        label = sysfs.read_text(directory / f"in{channel}_label") or ""
        if _skip_label(label) or not sysfs.exists(directory / f"in{channel}_input"):
            continue
        rails.append(Rail(label, directory / f"in{channel}_input", directory / f"curr{channel}_input"))
    return rails


def _iio_rails(sysfs: SysfsRoot, directory: Path) -> list[Rail]:
    rails = []
    for name_file in sysfs.glob(directory, "rail_name_*"):
        match = re.fullmatch(r"rail_name_(\d)", name_file.name)
        label = sysfs.read_text(name_file) or ""
        if match is None or _skip_label(label):
            continue
        index = match.group(1)
        rails.append(Rail(label, directory / f"in_voltage{index}_input",
                          directory / f"in_current{index}_input", directory / f"in_power{index}_input"))
    return rails


def find_ina3221(sysfs: SysfsRoot) -> Ina3221Reader | None:
    """All INA3221 rails on the board, hwmon layout first (JetPack 5+), then iio (JetPack 4)."""
    rails: list[Rail] = []
    hwmon_dirs = sysfs.glob(HWMON_CLASS, "hwmon*")
    hwmon_dirs += sysfs.glob(I2C_DEVICES, "*/hwmon/hwmon*")
    seen: set[Path] = set()
    for directory in hwmon_dirs:
        if chip_name(sysfs, directory) == "ina3221" and directory.resolve() not in seen:
            seen.add(directory.resolve())
            rails += _hwmon_rails(sysfs, directory)
    if not rails:
        for directory in sysfs.glob(IIO_DEVICES, "iio:device*"):
            if chip_name(sysfs, directory) in {"ina3221x", "ina3221"}:
                rails += _iio_rails(sysfs, directory)
    return Ina3221Reader(sysfs, rails) if rails else None
