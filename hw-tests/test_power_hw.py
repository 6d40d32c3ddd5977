"""On a real board: sensor detection and 10 s of idle power, recorded in report.json."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from edged.power.energy import EnergyMeter
from edged.power.sensors import detect

IDLE_SECONDS = float(os.environ.get("EDGED_HW_IDLE_S", "10"))
# Whole-board idle on the boards we support is 1-15 W; a dev PC may be higher.
MAX_IDLE_W = float(os.environ.get("EDGED_HW_MAX_IDLE_W", "60"))


def test_detect_sensors(report: dict[str, Any]) -> None:
    sensors = detect("/")
    readings = sensors.read(time.monotonic())
    report["results"]["sensors"] = {**sensors.describe(), "readings": readings.to_dict()}
    if expected := os.environ.get("EDGED_HW_BOARD"):
        assert sensors.board == expected
    if expected := os.environ.get("EDGED_HW_POWER_SOURCE"):
        assert sensors.power_sources[0].name == expected
    assert readings.power_w is not None, readings.errors
    if sensors.thermal is not None:
        assert readings.temperature_c is not None, readings.errors


def test_idle_power(report: dict[str, Any]) -> None:
    meter = EnergyMeter.detect("/")
    started = time.monotonic()
    meter.start()
    handle = meter.begin()
    try:
        time.sleep(IDLE_SECONDS)
    finally:
        energy = meter.end(handle)
        meter.stop()
    elapsed = time.monotonic() - started
    latest = meter.latest()
    assert latest is not None
    average_w = energy.joules / energy.seconds
    report["results"]["idle"] = {
        "seconds": round(elapsed, 3), "joules": round(energy.joules, 4), "average_w": round(average_w, 4),
        "source": energy.source, "scope": energy.scope, "estimated": energy.estimated,
        "counters_j": meter.counters(), "last_readings": latest.to_dict()}
    assert 0 < average_w < MAX_IDLE_W
    if not energy.estimated:
        # A real sensor and a counter integrated over the same window must agree with its last reading.
        assert latest.power_w is not None
        assert average_w == pytest.approx(latest.power_w, rel=0.5)
