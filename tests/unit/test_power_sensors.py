"""Each sensor reader against fake sysfs trees shaped like real boards, and detect() per board."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from edged.errors import SensorError
from edged.power.boards import BOARD_TABLE, BoardCoefficients, EstimatePowerSource, detect_board
from edged.power.hwmon import Ina2xxReader, Ina3221Reader, Rail, find_ina2xx, find_ina3221
from edged.power.rapl import find_rapl
from edged.power.sensors import detect
from edged.power.supply import PowerSupplies
from edged.sysfs import SysfsRoot
from edged.power.thermal import CpuFreqReader, CpuStatReader, ProcessCpuClock, ThermalReader

BOARDS = Path(__file__).resolve().parent.parent / "fixtures" / "boards"


def board_root(name: str) -> Path:
    return BOARDS / name


@pytest.fixture
def copy_board(tmp_path: Path):
    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(BOARDS / name, target)
        return target

    return copy


def vcgencmd_from(board: str):
    """A runner that answers like the board's vcgencmd, from the captured text files."""
    outputs = {path.stem: path.read_text() for path in (BOARDS / board / "vcgencmd").glob("*.txt")}
    calls: list[tuple[str, ...]] = []

    def run(args: Sequence[str]) -> str:
        calls.append(tuple(args))
        if args[1] not in outputs:
            raise SensorError(f"vcgencmd {args[1]}: Command not registered")
        return outputs[args[1]]

    run.calls = calls  # type: ignore[attr-defined]
    return run


def fixed_cpu_clock(values: list[float]):
    iterator = iter(values)
    return lambda: next(iterator)


# ---- per reader -------------------------------------------------------------------------------

def test_pi4_ina219_reads_power1_input_in_microwatts() -> None:
    sysfs = SysfsRoot(board_root("pi4-ina219"))
    readers = find_ina2xx(sysfs)
    assert [reader.name for reader in readers] == ["ina219"]
    sample = readers[0].read(0.0)
    assert sample.power_w == pytest.approx(3.16)
    assert sample.supply_voltage_v == pytest.approx(5.104)
    assert sample.scope == "board_input"


def test_ina2xx_without_power_attribute_multiplies_current_and_voltage(copy_board) -> None:
    root = copy_board("pi4-ina219")
    (root / "sys/class/hwmon/hwmon2/power1_input").unlink()
    (root / "sys/class/hwmon/hwmon2/curr1_input").write_text("-620\n")  # shunt wired backwards
    sample = find_ina2xx(SysfsRoot(root))[0].read(0.0)
    assert sample.power_w == pytest.approx(0.620 * 5.104)


def test_ina2xx_with_neither_power_nor_current_is_a_sensor_error(copy_board) -> None:
    root = copy_board("pi4-ina219")
    (root / "sys/class/hwmon/hwmon2/power1_input").unlink()
    (root / "sys/class/hwmon/hwmon2/curr1_input").unlink()
    with pytest.raises(SensorError, match="neither power1_input"):
        find_ina2xx(SysfsRoot(root))[0].read(0.0)


def test_jetson_orin_ina3221_hwmon_uses_the_board_input_rail() -> None:
    reader = find_ina3221(SysfsRoot(board_root("jetson-orin")))
    assert reader is not None
    assert [rail.label for rail in reader.rails] == ["VDD_IN"]
    sample = reader.read(0.0)
    assert sample.power_w == pytest.approx(5.072 * 1.208)
    assert sample.scope == "board_input"
    assert sample.supply_voltage_v == pytest.approx(5.072)


def test_jetson_nano_iio_layout_reads_milliwatts_of_the_input_rail() -> None:
    reader = find_ina3221(SysfsRoot(board_root("jetson-nano-iio")))
    assert reader is not None
    assert [rail.label for rail in reader.rails] == ["POM_5V_IN"]
    assert reader.read(0.0).power_w == pytest.approx(2.910)


def test_ina3221_without_an_input_rail_sums_rails_and_skips_unconnected(tmp_path: Path) -> None:
    device = tmp_path / "sys/class/hwmon/hwmon3"
    device.mkdir(parents=True)
    for name, value in {"name": "ina3221", "in1_label": "VDD_GPU_SOC", "in1_input": "5000", "curr1_input": "1000",
                        "in2_label": "NC", "in2_input": "5000", "curr2_input": "9999",
                        "in3_label": "VDD_CPU_CV", "in3_input": "5000", "curr3_input": "400"}.items():
        (device / name).write_text(value)
    reader = find_ina3221(SysfsRoot(tmp_path))
    assert reader is not None and reader.scope == "rail_sum"
    assert reader.read(0.0).power_w == pytest.approx(5.0 + 2.0)


def test_ina3221_reader_refuses_an_empty_rail_list() -> None:
    with pytest.raises(SensorError):
        Ina3221Reader(SysfsRoot("/nonexistent"), [])


def test_rapl_counter_undoes_wraparound_and_ignores_subzones(copy_board) -> None:
    root = copy_board("x86-rapl")
    reader = find_rapl(SysfsRoot(root))
    assert reader is not None and [zone.directory.name for zone in reader.zones] == ["intel-rapl:0"]
    energy = root / "sys/class/powercap/intel-rapl:0/energy_uj"
    first = reader.read(10.0)
    assert first.power_w is None and first.energy_j == 0.0
    energy.write_text("262143000000\n")  # +1 J in 10 s
    assert reader.read(20.0).power_w == pytest.approx(0.1)
    energy.write_text("671150\n")  # wrapped: 328850 µJ to the top, then 671150 µJ
    sample = reader.read(30.0)
    assert sample.energy_j == pytest.approx(2.0)
    assert sample.power_w == pytest.approx(0.1)


def test_rapl_prefers_the_platform_zone_when_present(copy_board) -> None:
    root = copy_board("x86-rapl")
    psys = root / "sys/class/powercap/intel-rapl:1"
    psys.mkdir()
    for name, value in {"name": "psys", "energy_uj": "5", "max_energy_range_uj": "262143328850"}.items():
        (psys / name).write_text(value)
    reader = find_rapl(SysfsRoot(root))
    assert reader is not None and reader.scope == "platform"
    assert [zone.directory.name for zone in reader.zones] == ["intel-rapl:1"]


def test_rapl_value_above_its_range_is_rejected(copy_board) -> None:
    root = copy_board("x86-rapl")
    reader = find_rapl(SysfsRoot(root))
    assert reader is not None
    reader.read(0.0)
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("999999999999999\n")
    with pytest.raises(SensorError, match="exceeds max_energy_range_uj"):
        reader.read(1.0)


def test_laptop_battery_discharging_gives_system_draw_and_on_battery() -> None:
    supplies = PowerSupplies.find(SysfsRoot(board_root("laptop")))
    assert supplies is not None and supplies.has_battery()
    summary = supplies.summary()
    assert summary.on_battery is True and summary.charging is False
    assert summary.battery_percent == 64
    assert summary.battery_power_w == pytest.approx(11.98 * 1.27)


def test_laptop_charging_is_not_on_battery_and_battery_draw_is_unknown(copy_board) -> None:
    root = copy_board("laptop")
    (root / "sys/class/power_supply/AC/online").write_text("1\n")
    (root / "sys/class/power_supply/BAT0/status").write_text("Charging\n")
    summary = PowerSupplies.find(SysfsRoot(root)).summary()  # type: ignore[union-attr]
    assert summary.on_battery is False and summary.charging is True
    assert summary.battery_power_w is None


def test_ignition_supply_offline_means_ignition_off(tmp_path: Path) -> None:
    supply = tmp_path / "sys/class/power_supply/ignition"
    supply.mkdir(parents=True)
    (supply / "type").write_text("Mains\n")
    (supply / "online").write_text("0\n")
    summary = PowerSupplies.find(SysfsRoot(tmp_path), ignition_supply="ignition").summary()  # type: ignore[union-attr]
    assert summary.ignition_on is False and summary.on_battery is False


def test_thermal_reader_takes_the_hottest_plausible_zone() -> None:
    snapshot = ThermalReader(SysfsRoot(board_root("jetson-orin"))).read()
    assert snapshot.max_c == pytest.approx(46.093)
    assert "cv0-thermal:thermal_zone2" not in snapshot.zones
    assert any("implausible" in error for error in snapshot.errors)


def test_cpu_readers_parse_proc_stat_and_cpufreq(copy_board) -> None:
    root = copy_board("pi5")
    reader = CpuStatReader(SysfsRoot(root))
    assert reader.read() is None  # no previous sample yet
    (root / "proc/stat").write_text("cpu  10132253 290696 3084719 46828783 16683 0 25195 0 0 0\n")
    assert reader.read() == pytest.approx(100 / 400)
    assert CpuFreqReader(SysfsRoot(root)).read() == pytest.approx(2400.0)


def test_process_cpu_clock_handles_spaces_and_parentheses_in_the_name(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/stat").write_text("4242 (edged (x) y) S 1 4242 4242 0 -1 4194560 5 0 0 0 250 50 0 0 20 0")
    assert ProcessCpuClock(SysfsRoot(tmp_path), ticks_per_second=100).seconds() == pytest.approx(3.0)


def test_estimate_is_idle_plus_busy_cores_and_always_labelled_estimate() -> None:
    coefficients = BoardCoefficients(board="test", idle_w=2.0, w_per_busy_core=1.5)
    source = EstimatePowerSource(coefficients, fixed_cpu_clock([10.0, 13.0, 100.0]), cores=4)
    assert source.read(0.0).power_w == pytest.approx(2.0)
    sample = source.read(2.0)  # 3 CPU-seconds in 2 s: 1.5 busy cores
    assert sample.power_w == pytest.approx(2.0 + 1.5 * 1.5)
    assert sample.source == "estimate" and sample.estimated
    assert source.read(3.0).power_w == pytest.approx(2.0 + 1.5 * 4)  # clamped to the core count


@pytest.mark.parametrize(("board", "expected"), [
    ("pi5", "pi5"), ("pi4-ina219", "pi4"), ("jetson-orin", "jetson-orin"), ("jetson-nano-iio", "generic"),
    ("x86-rapl", "generic-x86"), ("laptop", "generic-x86")])
def test_board_detection(board: str, expected: str) -> None:
    assert detect_board(SysfsRoot(board_root(board))) == expected
    assert expected in BOARD_TABLE


# ---- detect() per board -----------------------------------------------------------------------

def test_detect_pi5_finds_pmic_throttling_and_thermal() -> None:
    runner = vcgencmd_from("pi5")
    sensors = detect(board_root("pi5"), runner, cpu_seconds=fixed_cpu_clock([0.0] * 10), now=0.0)
    assert sensors.board == "pi5"
    assert [source.name for source in sensors.power_sources] == ["rpi5_pmic", "estimate"]
    assert sensors.throttle is not None and sensors.thermal is not None
    readings = sensors.read(0.5)
    assert readings.power_source == "rpi5_pmic" and readings.power_scope == "pmic_rails"
    assert readings.power_w == pytest.approx(3.1041762, rel=1e-6)
    assert readings.supply_voltage_v == pytest.approx(5.130896)
    assert readings.temperature_c == pytest.approx(61.25)
    assert readings.throttled is not None and readings.throttled.raw == 0
    assert readings.cpu_freq_mhz == pytest.approx(2400.0)
    assert readings.errors == ()


def test_pi5_vcgencmd_runs_once_per_sampling_period_not_per_read() -> None:
    runner = vcgencmd_from("pi5")
    sensors = detect(board_root("pi5"), runner, cpu_seconds=fixed_cpu_clock([0.0] * 10), now=0.0)
    before = len(runner.calls)  # type: ignore[attr-defined]
    for now in (0.1, 0.2, 0.3, 0.4):  # all inside the cached period that began at detection
        sensors.read(now)
    assert len(runner.calls) == before  # type: ignore[attr-defined]
    sensors.read(1.5)
    assert len(runner.calls) == before + 2  # type: ignore[attr-defined]  # pmic + get_throttled, once each


def test_detect_pi4_prefers_the_ina219_and_decodes_throttle_bits() -> None:
    sensors = detect(board_root("pi4-ina219"), vcgencmd_from("pi4-ina219"), cpu_seconds=lambda: 0.0, now=0.0)
    assert sensors.board == "pi4"
    assert [source.name for source in sensors.power_sources] == ["ina219", "estimate"]
    readings = sensors.read(1.0)
    assert readings.power_source == "ina219" and readings.power_w == pytest.approx(3.16)
    throttle = readings.throttled
    assert throttle is not None
    assert throttle.under_voltage and throttle.throttled and throttle.under_voltage_occurred
    assert not throttle.soft_temp_limit


def test_detect_jetson_orin_uses_ina3221() -> None:
    sensors = detect(board_root("jetson-orin"), cpu_seconds=lambda: 0.0, now=0.0)
    assert sensors.board == "jetson-orin"
    assert [source.name for source in sensors.power_sources] == ["ina3221", "estimate"]
    assert sensors.throttle is None
    assert sensors.read(1.0).power_w == pytest.approx(5.072 * 1.208)


def test_detect_x86_uses_rapl_after_the_first_sample(copy_board) -> None:
    root = copy_board("x86-rapl")
    sensors = detect(root, cpu_seconds=lambda: 0.0, now=0.0)
    assert [source.name for source in sensors.power_sources] == ["rapl", "estimate"]
    (root / "sys/class/powercap/intel-rapl:0/energy_uj").write_text("262143000000\n")  # +1 J
    readings = sensors.read(2.0)
    assert readings.power_source == "rapl" and readings.power_w == pytest.approx(0.5)
    assert readings.energy_j == pytest.approx(1.0)
    assert readings.temperature_c == pytest.approx(52.0)


def test_detect_laptop_uses_battery_until_charging_then_falls_back(copy_board) -> None:
    root = copy_board("laptop")
    sensors = detect(root, cpu_seconds=lambda: 0.0, now=0.0)
    assert [source.name for source in sensors.power_sources] == ["battery", "estimate"]
    readings = sensors.read(1.0)
    assert readings.power_source == "battery" and readings.on_battery is True
    (root / "sys/class/power_supply/AC/online").write_text("1\n")
    (root / "sys/class/power_supply/BAT0/status").write_text("Charging\n")
    readings = sensors.read(2.0)
    assert readings.power_source == "estimate" and readings.power_estimated
    assert readings.charging is True and readings.on_battery is False


def test_detect_with_nothing_gives_only_the_estimate(tmp_path: Path) -> None:
    sensors = detect(tmp_path, cpu_seconds=lambda: 0.0, now=0.0,
                     coefficients=BoardCoefficients(board="custom", idle_w=1.0, w_per_busy_core=0.5))
    readings = sensors.read(1.0)
    assert readings.power_source == "estimate" and readings.power_w == pytest.approx(1.0)
    assert readings.temperature_c is None and readings.throttled is None and readings.battery_percent is None


def test_detect_without_access_to_rapl_leaves_it_out(copy_board, monkeypatch: pytest.MonkeyPatch) -> None:
    root = copy_board("x86-rapl")
    import edged.sysfs as sysfs_module

    real = sysfs_module._read_bytes

    def deny_energy(path: Path, limit: int) -> bytes:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real(path, limit)

    monkeypatch.setattr(sysfs_module, "_read_bytes", deny_energy)
    sensors = detect(root, cpu_seconds=lambda: 0.0, now=0.0)
    assert [source.name for source in sensors.power_sources] == ["estimate"]


def test_rail_read_without_any_values_is_a_sensor_error(tmp_path: Path) -> None:
    rail = Rail("VDD_IN", tmp_path / "in1_input", tmp_path / "curr1_input")
    with pytest.raises(SensorError, match="no readings"):
        rail.read(SysfsRoot(tmp_path))


def test_ina2xx_reader_name_is_the_chip(tmp_path: Path) -> None:
    assert Ina2xxReader(SysfsRoot(tmp_path), tmp_path, "ina226").name == "ina226"
