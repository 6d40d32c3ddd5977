"""EnergyMeter: trapezoid integration, counter deltas, per-request reports and a sampler that survives."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

import edged.power.energy as energy_module

from edged.power.energy import MAX_EXTRAPOLATION_S, EnergyMeter
from edged.power.readings import Readings
from edged.power.sensors import detect

BOARDS = Path(__file__).resolve().parent.parent / "fixtures" / "boards"


def reading(at: float, power_w: float | None, source: str | None = "ina219", *, energy_j: float | None = None,
            scope: str | None = None, errors: tuple[str, ...] = ()) -> Readings:
    return Readings(at=at, temperature_c=None, throttled=None, battery_percent=None, charging=None,
                    on_battery=None, ignition_on=None, supply_voltage_v=None, power_w=power_w,
                    power_source=source, power_scope=scope or ("estimate" if source == "estimate" else "board_input"),
                    energy_j=energy_j, errors=errors)


class Scripted:
    """Returns the scripted readings in order, stamped with the time the meter asks for."""

    def __init__(self, *script: dict[str, Any]) -> None:
        self.script = list(script)

    def read(self, now: float) -> Readings:
        step = self.script.pop(0)
        return reading(now, **step)


def test_trapezoid_integration_of_power_samples() -> None:
    meter = EnergyMeter(Scripted({"power_w": 2.0}, {"power_w": 4.0}, {"power_w": 4.0}))
    for now in (0.0, 1.0, 2.0):
        meter.sample(now)
    assert meter.total_j == pytest.approx(3.0 + 4.0)
    assert meter.counters() == {"ina219": pytest.approx(7.0)}


def test_counter_deltas_win_over_power_when_the_source_has_a_counter() -> None:
    meter = EnergyMeter(Scripted({"power_w": 50.0, "source": "rapl", "energy_j": 100.0},
                                 {"power_w": 50.0, "source": "rapl", "energy_j": 105.0},
                                 {"power_w": 50.0, "source": "rapl", "energy_j": 112.0},
                                 {"power_w": 50.0, "source": "rapl", "energy_j": 3.0}))  # counter reset
    for now in (0.0, 1.0, 2.0, 3.0):
        meter.sample(now)
    assert meter.total_j == pytest.approx(12.0)


def test_request_energy_between_begin_and_end() -> None:
    meter = EnergyMeter(Scripted({"power_w": 4.0}, {"power_w": 4.0}, {"power_w": 6.0}))
    meter.sample(0.0)
    handle = meter.begin(1.0)
    meter.sample(1.0)
    meter.sample(2.0)
    report = meter.end(handle, 2.0)
    assert report.joules == pytest.approx(5.0)
    assert report.source == "ina219" and report.scope == "board_input" and not report.estimated
    assert report.seconds == pytest.approx(1.0)


def test_short_request_between_samples_is_extrapolated_from_the_last_power() -> None:
    meter = EnergyMeter(Scripted({"power_w": 2.0}))
    meter.sample(0.0)
    handle = meter.begin(0.5)
    report = meter.end(handle, 0.7)
    assert report.joules == pytest.approx(0.4)
    assert report.source == "ina219"


def test_extrapolation_is_bounded() -> None:
    meter = EnergyMeter(Scripted({"power_w": 2.0}))
    meter.sample(0.0)
    handle = meter.begin(0.0)
    assert meter.end(handle, 1000.0).joules == pytest.approx(2.0 * MAX_EXTRAPOLATION_S)


def test_any_estimated_part_labels_the_whole_request_estimate() -> None:
    meter = EnergyMeter(Scripted({"power_w": 3.0}, {"power_w": 3.0}, {"power_w": 5.0, "source": "estimate"}))
    meter.sample(0.0)
    handle = meter.begin(0.0)
    meter.sample(1.0)
    meter.sample(2.0)
    report = meter.end(handle, 2.0)
    assert report.source == "estimate" and report.estimated and report.scope == "estimate"
    assert report.joules == pytest.approx(3.0 + 5.0)


def test_several_measured_sources_are_named_together() -> None:
    meter = EnergyMeter(Scripted({"power_w": 3.0, "source": "battery", "scope": "battery"},
                                 {"power_w": 3.0, "source": "battery", "scope": "battery"},
                                 {"power_w": 5.0, "source": "rapl", "energy_j": 1.0, "scope": "cpu_package"}))
    meter.sample(0.0)
    handle = meter.begin(0.0)
    meter.sample(1.0)
    meter.sample(2.0)
    report = meter.end(handle, 2.0)
    assert report.source == "battery+rapl" and report.scope == "mixed" and not report.estimated


def test_end_before_any_sample_reports_zero_estimate() -> None:
    meter = EnergyMeter(Scripted())
    report = meter.end(meter.begin(0.0), 1.0)
    assert report.joules == 0.0 and report.source == "estimate"


def test_sampling_is_faster_while_requests_run() -> None:
    meter = EnergyMeter(Scripted(), idle_period_s=1.0, active_period_s=0.2)
    assert meter.period_s() == 1.0
    first, second = meter.begin(0.0), meter.begin(0.0)
    assert meter.period_s() == 0.2
    meter.end(first, 1.0)
    assert meter.period_s() == 0.2
    meter.end(second, 1.0)
    assert meter.period_s() == 1.0


def test_readings_without_power_add_nothing() -> None:
    meter = EnergyMeter(Scripted({"power_w": None, "source": None}, {"power_w": None, "source": None}))
    meter.sample(0.0)
    meter.sample(1.0)
    assert meter.total_j == 0.0
    assert meter.latest() is not None and meter.latest().at == 1.0  # type: ignore[union-attr]


def test_meter_over_a_fake_pi5_reports_the_pmic_as_source() -> None:
    outputs = {path.stem: path.read_text() for path in (BOARDS / "pi5" / "vcgencmd").glob("*.txt")}
    sensors = detect(BOARDS / "pi5", lambda args: outputs[args[1]], cpu_seconds=lambda: 0.0, now=0.0)
    meter = EnergyMeter(sensors)
    handle = meter.begin(0.0)
    for now in (0.0, 0.2, 0.4, 0.6):
        meter.sample(now)
    report = meter.end(handle, 0.6)
    assert report.source == "rpi5_pmic" and report.scope == "pmic_rails"
    assert report.joules == pytest.approx(3.1041762 * 0.6, rel=1e-4)


class FlakyThenCounting:
    """Raises unexpected errors first (a bug in a reader), then counts successful reads."""

    def __init__(self, failures: int, wanted: int) -> None:
        self.failures = failures
        self.wanted = wanted
        self.reads = 0
        self.done = threading.Event()

    def read(self, now: float) -> Readings:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("reader bug")
        self.reads += 1
        if self.reads >= self.wanted:
            self.done.set()
        return reading(now, 1.0, errors=("ina219: flaky",) if self.reads == 1 else ())


def test_sampling_thread_survives_reader_errors_and_stops() -> None:
    source = FlakyThenCounting(failures=2, wanted=3)
    meter = EnergyMeter(source, idle_period_s=0.01, active_period_s=0.01)
    meter.start()
    meter.start()  # idempotent
    try:
        assert source.done.wait(timeout=10), "sampler stopped after reader errors"
    finally:
        meter.stop()
    assert meter._thread is None
    assert meter.latest() is not None


def test_sensor_errors_are_logged_once_per_sensor_and_on_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    meter = EnergyMeter(Scripted({"power_w": 1.0, "errors": ("ina219: garbage 1",)},
                                 {"power_w": 1.0, "errors": ("ina219: garbage 2", "get_throttled: boom")},
                                 {"power_w": 1.0}))
    with capture_logs() as logs:
        # A fresh logger bound inside the capture, in case another test configured caching loggers.
        monkeypatch.setattr(energy_module, "logger", structlog.get_logger("test"))
        for now in (0.0, 1.0, 2.0):
            meter.sample(now)
    failed = [(entry["sensor"], entry["error"]) for entry in logs if entry["event"] == "sensor read failed"]
    recovered = sorted(entry["sensor"] for entry in logs if entry["event"] == "sensor recovered")
    assert failed == [("ina219", "ina219: garbage 1"), ("get_throttled", "get_throttled: boom")]
    assert recovered == ["get_throttled", "ina219"]
    assert meter.total_j == pytest.approx(2.0)


def test_detect_classmethod_wraps_a_sensor_set(tmp_path: Path) -> None:
    meter = EnergyMeter.detect(tmp_path, cpu_seconds=lambda: 0.0, now=0.0)
    assert meter.sample(1.0).power_source == "estimate"
