"""Malformed and hostile sensor files: every case is a clear SensorError or None, never a crash."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edged.sysfs as sysfs_module
from edged.errors import SensorError
from edged.power.hwmon import find_ina2xx
from edged.power.raspberrypi import (CachedCommand, PmicReader, ThrottleReader, parse_pmic_adc, parse_throttled,
                                     run_vcgencmd)
from edged.power.sensors import detect
from edged.power.supply import PowerSupplies
from edged.sysfs import MAX_ATTRIBUTE_BYTES, SysfsRoot
from edged.power.thermal import CpuStatReader, ProcessCpuClock, ThermalReader

BOARDS = Path(__file__).resolve().parent.parent / "fixtures" / "boards"
INA219 = "sys/class/hwmon/hwmon2/power1_input"


@pytest.fixture
def pi4(tmp_path: Path) -> Path:
    root = tmp_path / "pi4"
    shutil.copytree(BOARDS / "pi4-ina219", root)
    return root


# ---- SysfsRoot --------------------------------------------------------------------------------

def test_missing_file_reads_as_none(tmp_path: Path) -> None:
    sysfs = SysfsRoot(tmp_path)
    assert sysfs.read_text("sys/class/nothing/here") is None
    assert sysfs.read_int("/sys/class/nothing/here") is None
    assert sysfs.glob("sys/class/hwmon", "hwmon*") == []


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"12.5\n", b"0x10\n", b"9" * 30 + b"\n", b"1 2\n"])
def test_non_integer_content_is_a_sensor_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "value").write_bytes(content)
    with pytest.raises(SensorError, match="value: expected an integer"):
        SysfsRoot(tmp_path).read_int("value")


def test_oversized_and_binary_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"1" * (MAX_ATTRIBUTE_BYTES + 1))
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(SensorError, match="larger than"):
        SysfsRoot(tmp_path).read_text("big")
    with pytest.raises(SensorError, match="not text"):
        SysfsRoot(tmp_path).read_text("binary")


def test_permission_denied_is_a_sensor_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "energy_uj").write_text("5\n")

    def denied(path: Path, limit: int) -> bytes:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(sysfs_module, "_read_bytes", denied)
    with pytest.raises(SensorError, match="permission denied"):
        SysfsRoot(tmp_path).read_int("energy_uj")


def test_io_error_from_a_powered_down_sensor_is_a_sensor_error(tmp_path: Path) -> None:
    (tmp_path / "temp").mkdir()  # reading a directory fails with an OSError, like EIO from sysfs
    with pytest.raises(SensorError, match="cannot read"):
        SysfsRoot(tmp_path).read_text("temp")


def test_paths_cannot_leave_the_root(tmp_path: Path) -> None:
    with pytest.raises(SensorError, match="leaves the root"):
        SysfsRoot(tmp_path).read_text("sys/../../etc/passwd")


def test_absolute_paths_map_onto_the_root(tmp_path: Path) -> None:
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys/x").write_text("7\n")
    sysfs = SysfsRoot(tmp_path)
    assert sysfs.read_int("/sys/x") == 7
    assert sysfs.read_int(tmp_path / "sys/x") == 7


def test_glob_sorts_naturally(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"hwmon{n}").mkdir()
    assert [p.name for p in SysfsRoot(tmp_path).glob(".", "hwmon*")] == ["hwmon1", "hwmon2", "hwmon10"]


# ---- readers on hostile values ----------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    ("garbage", "expected an integer"), ("", "expected an integer"), ("-3000000", "implausible"),
    ("999999999999999999", "implausible")])
def test_bad_ina219_power_is_a_sensor_error(pi4: Path, content: str, message: str) -> None:
    (pi4 / INA219).write_text(content)
    with pytest.raises(SensorError, match=message):
        find_ina2xx(SysfsRoot(pi4))[0].read(0.0)


def test_a_failing_sensor_falls_back_to_the_estimate_without_crashing(pi4: Path) -> None:
    sensors = detect(pi4, lambda args: "throttled=0x0", cpu_seconds=lambda: 0.0, now=0.0)
    (pi4 / INA219).write_text("garbage")
    readings = sensors.read(1.0)
    assert readings.power_source == "estimate"
    assert any(error.startswith("ina219:") for error in readings.errors)


def test_unreadable_name_files_do_not_stop_detection(pi4: Path) -> None:
    (pi4 / "sys/class/hwmon/hwmon0/name").write_bytes(b"\xff" * 10)
    assert [reader.name for reader in find_ina2xx(SysfsRoot(pi4))] == ["ina219"]


def test_a_broken_probe_is_left_out_of_the_sensor_set(pi4: Path) -> None:
    (pi4 / INA219).write_text("garbage")
    sensors = detect(pi4, cpu_seconds=lambda: 0.0, now=0.0)
    assert [source.name for source in sensors.power_sources] == ["estimate"]


def test_thermal_zone_with_garbage_is_skipped_and_reported(tmp_path: Path) -> None:
    for n, temp in enumerate(["garbage", "55000", "", "2147483647"]):
        zone = tmp_path / f"sys/class/thermal/thermal_zone{n}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(temp)
        (zone / "type").write_text(f"zone{n}")
    snapshot = ThermalReader(SysfsRoot(tmp_path)).read()
    assert snapshot.max_c == pytest.approx(55.0)
    assert len(snapshot.errors) == 3


def test_bad_battery_capacity_is_reported_not_raised_by_the_sensor_set(tmp_path: Path) -> None:
    root = tmp_path / "laptop"
    shutil.copytree(BOARDS / "laptop", root)
    (root / "sys/class/power_supply/BAT0/capacity").write_text("250")
    with pytest.raises(SensorError, match="not a percentage"):
        PowerSupplies.find(SysfsRoot(root)).summary()  # type: ignore[union-attr]
    readings = detect(root, cpu_seconds=lambda: 0.0, now=0.0).read(1.0)
    assert readings.battery_percent is None
    assert any(error.startswith("power_supply") for error in readings.errors)


@pytest.mark.parametrize("text", ["garbage", "", "cpu  1 2 x 4\n", "cpu  -1 2 3 4\n", "intr 5\n"])
def test_malformed_proc_stat(tmp_path: Path, text: str) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text(text)
    with pytest.raises(SensorError):
        CpuStatReader(SysfsRoot(tmp_path)).read()


def test_malformed_process_stat(tmp_path: Path) -> None:
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/stat").write_text("4242 (edged) S 1 2")
    with pytest.raises(SensorError, match="too few fields"):
        ProcessCpuClock(SysfsRoot(tmp_path), ticks_per_second=100).seconds()


# ---- vcgencmd output --------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "garbage\n", "VDD_CORE_A current(7)=2.3A\n",
                                  "error=1 error_msg=\"Command not registered\"\n"])
def test_pmic_output_without_a_complete_rail_is_rejected(text: str) -> None:
    with pytest.raises(SensorError, match="no rail with both"):
        parse_pmic_adc(text)


def test_pmic_output_with_absurd_values_is_rejected() -> None:
    with pytest.raises(SensorError, match="implausible"):
        parse_pmic_adc("VDD_CORE_A current(7)=99999.0A\nVDD_CORE_V volt(15)=0.8V\n")


def test_pmic_ignores_noise_lines_and_keeps_complete_rails() -> None:
    rails = parse_pmic_adc("hello\nVDD_CORE_A current(7)=2.000A\nVDD_CORE_V volt(15)=0.500V\nEXT5V_V volt(24)=5.1V\n")
    assert rails == {"VDD_CORE": {"A": 2.0, "V": 0.5}, "EXT5V": {"V": 5.1}}
    assert PmicReader(lambda args: "VDD_CORE_A current(7)=2.000A\nVDD_CORE_V volt(15)=0.500V\n").read(0.0).power_w == 1.0


@pytest.mark.parametrize("text", ["", "throttled=", "throttled=0xZZ", "throttled=0x123456789", "thermal=0x0"])
def test_bad_get_throttled_output_is_rejected(text: str) -> None:
    with pytest.raises(SensorError, match="get_throttled"):
        parse_throttled(text)


def test_throttle_bits_decode_soft_limit_and_history() -> None:
    state = parse_throttled("throttled=0x80008\n")
    assert state.soft_temp_limit and state.soft_temp_limit_occurred and state.thermally_limited
    assert not state.under_voltage and not state.freq_capped


def test_a_failing_command_is_cached_for_the_period_too() -> None:
    calls: list[Sequence[str]] = []

    def failing(args: Sequence[str]) -> str:
        calls.append(args)
        raise SensorError("vcgencmd: exit status 255")

    reader = ThrottleReader(failing, period_s=1.0)
    for now in (0.0, 0.3, 0.6, 0.9):
        with pytest.raises(SensorError):
            reader.read(now)
    assert len(calls) == 1
    with pytest.raises(SensorError):
        reader.read(1.0)
    assert len(calls) == 2


def test_cached_command_reruns_when_the_clock_goes_backwards() -> None:
    outputs = iter(["a", "b"])
    command = CachedCommand(lambda args: next(outputs), ("x",), period_s=10.0)
    assert command.output(100.0) == "a"
    assert command.output(5.0) == "b"


def test_real_runner_reports_missing_commands_and_failures() -> None:
    with pytest.raises(SensorError):
        run_vcgencmd(["/nonexistent/vcgencmd", "get_throttled"])
    with pytest.raises(SensorError, match="exit status 3"):
        run_vcgencmd([sys.executable, "-c", "raise SystemExit(3)"])
    assert run_vcgencmd([sys.executable, "-c", "print('throttled=0x0')"]).strip() == "throttled=0x0"


# ---- fuzz: any text at all gives a value or a SensorError -------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300))
def test_any_attribute_content_is_an_int_or_a_sensor_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "value").write_bytes(content)
    try:
        value = SysfsRoot(tmp_path).read_int("value")
    except SensorError:
        return
    assert isinstance(value, int) and abs(value) < 10**19


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=400))
def test_any_vcgencmd_output_parses_or_is_a_sensor_error(text: str) -> None:
    for parse in (parse_pmic_adc, parse_throttled):
        try:
            parse(text)
        except SensorError:
            pass


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.tuples(st.sampled_from(["VDD_CORE", "3V3_SYS", "EXT5V"]), st.sampled_from("AV"),
                                st.floats(min_value=0, max_value=20, allow_nan=False)), max_size=12))
def test_pmic_power_is_never_negative(lines: list[tuple[str, str, float]]) -> None:
    text = "".join(f"{rail}_{unit} {'current' if unit == 'A' else 'volt'}(1)={value:.6f}{unit}\n"
                   for rail, unit, value in lines)
    try:
        sample = PmicReader(lambda args: text).read(0.0)
    except SensorError:
        return
    assert sample.power_w is not None and sample.power_w >= 0
