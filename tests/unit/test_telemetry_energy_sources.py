"""Every energy source name the meter can produce fits the telemetry records (several sensors at once too)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from edged.power.boards import EstimatePowerSource
from edged.power.energy import EnergyMeter, _name_scope, _name_sources
from edged.power.hwmon import INA2XX_CHIPS, Ina3221Reader
from edged.power.rapl import RaplReader
from edged.power.raspberrypi import PmicReader
from edged.power.readings import Readings
from edged.power.sensors import detect
from edged.power.supply import BatteryPowerSource
from edged.state import PowerState
from edged.telemetry.compose import device_record, request_record
from edged.telemetry.metrics import Metrics
from edged.telemetry.records import RequestRecord
from edged.telemetry.sampler import ProcessSample
from edged.telemetry.spool import SpoolStats
from tests.fakes import summary

BOARDS = Path(__file__).resolve().parent.parent / "fixtures" / "boards"
# Every name a power source can carry: the INA2xx chips keep their kernel name, the others a fixed one.
SOURCE_NAMES = sorted({*INA2XX_CHIPS, Ina3221Reader.name, PmicReader.name, BatteryPowerSource.name,
                       RaplReader.name, EstimatePowerSource.name})
SAMPLE = ProcessSample(None, None, None, None, None, None, None)
SPOOL = SpoolStats(pending=0, pending_bytes=0, next_seq=1, dropped_total=0, recoveries_total=0,
                   recovered_from_corruption=False)


def every_combined_name() -> list[str]:
    names = {_name_sources(list(subset)) for size in range(1, len(SOURCE_NAMES) + 1)
             for subset in itertools.combinations(SOURCE_NAMES, size)}
    return sorted(names)


def records_for(source: str, scope: str) -> None:
    record = request_record(summary(energy_j=1.25, energy_source=source, energy_scope=scope, output_tokens=4,
                                    duration_ms=10.0, queue_time_ms=1.0, time_to_first_token_ms=2.0,
                                    decode_tokens_per_s=3.0), device_id="pi-7", time_unix_ms=1)
    assert record.energy_source == source
    power = PowerState(power_w=3.0, energy_j=100.0, energy_source=source, energy_scope=scope)
    device = device_record(device_id="pi-7", time_unix_ms=1, uptime_s=1.0, sample=SAMPLE,
                           metrics=Metrics().snapshot(), spool=SPOOL, power=power, queue_depth=0, profile="eco",
                           governor_reason="default")
    assert device.energy_source == source


def test_the_source_names_cover_what_the_fixture_boards_detect() -> None:
    detected = {source.name for board in BOARDS.iterdir() if board.is_dir()
                for source in detect(board.resolve()).power_sources}
    assert detected <= set(SOURCE_NAMES) and len(detected) >= 4


def test_every_single_and_combined_source_name_builds_both_records() -> None:
    names = every_combined_name()
    assert "ina219+rapl" in names and "ina219+ina226+ina3221+rapl+rpi5_pmic" in names
    assert len(names) == 2 ** (len(SOURCE_NAMES) - 1)  # every subset without the estimate, plus "estimate"
    for name in names:
        scope = _name_scope(name.split("+"), {"ina219": "board_input", "rapl": "soc_package"})
        records_for(name, scope)


def _reading(at: float, source: str, power_w: float) -> Readings:
    return Readings(at=at, temperature_c=None, throttled=None, battery_percent=None, charging=None, on_battery=None,
                    ignition_on=None, supply_voltage_v=None, power_w=power_w, power_source=source,
                    power_scope="board_input" if source.startswith("ina") else "soc_package", energy_j=None)


class Switching:
    """A sensor set whose preferred sensor drops out half-way: the meter's two-sensor case."""

    def __init__(self, *sources: str) -> None:
        self.sources = list(sources)

    def read(self, now: float) -> Readings:
        source = self.sources.pop(0) if len(self.sources) > 1 else self.sources[0]
        return _reading(now, source, 4.0)


def test_a_request_measured_by_two_sensors_builds_its_record() -> None:
    meter = EnergyMeter(Switching("ina219", "ina219", "rapl", "rapl"))
    meter.sample(0.0)
    handle = meter.begin(0.0)
    for now in (1.0, 2.0, 3.0):
        meter.sample(now)
    report = meter.end(handle, 3.0)
    assert report.source == "ina219+rapl" and report.scope == "mixed"
    records_for(report.source, report.scope)
    counters = meter.counters()
    assert "+".join(sorted(counters)) == "ina219+rapl"
    records_for("+".join(sorted(counters)), "mixed")


@pytest.mark.parametrize("bad", ["", "+", "ina219+", "+rapl", "ina 219", "a" * 65, "+".join(["a"] * 17)])
def test_malformed_source_names_are_still_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        RequestRecord(device_id="pi-7", time_unix_ms=1, outcome="ok", transport="unix", priority="normal",
                      profile="eco", energy_j=1.0, energy_source=bad)


def test_the_two_sensor_fixture_board_switches_sensors_when_the_first_fails(tmp_path: Path) -> None:
    root = tmp_path / "board"
    shutil.copytree(BOARDS / "two-ina", root)
    sensors = detect(root)
    assert [s.name for s in sensors.power_sources] == ["ina219", "ina226", "estimate"]
    meter = EnergyMeter(sensors)
    meter.sample(0.0)
    meter.sample(1.0)
    (root / "sys/class/hwmon/hwmon0/power1_input").unlink()
    meter.sample(2.0)
    assert sorted(meter.counters()) == ["ina219", "ina226"]
