"""The governor driven by scripted readings: hysteresis, dwell, overrides, reasons, no flapping."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest
import structlog
from pydantic import ValidationError
from structlog.testing import capture_logs

import edged.power.governor as governor_module
from edged.errors import ConfigError
from edged.power.governor import Governor, GovernorRules
from edged.power.profiles import Profile, builtin_profiles_dir, load_profiles
from edged.power.readings import Readings, ThrottleState

PROFILES: dict[str, Profile] = load_profiles(builtin_profiles_dir())
BASE = Readings(at=0.0, temperature_c=50.0, throttled=ThrottleState.from_bits(0), battery_percent=None,
                charging=None, on_battery=None, ignition_on=None, supply_voltage_v=5.1, power_w=4.0,
                power_source="ina219", power_scope="board_input", energy_j=None)


def readings(**changes: Any) -> Readings:
    return replace(BASE, **changes)


def governor(**rules: Any) -> Governor:
    return Governor(PROFILES, GovernorRules(**rules))


def drive(gov: Governor, script: list[tuple[float, Readings]]) -> list[str]:
    """Run decisions and return the profile after each one."""
    return [gov.decide(r, now).profile_name for now, r in script]


def test_first_decision_picks_the_default_at_once() -> None:
    decision = governor().decide(readings(), 0.0)
    assert (decision.profile_name, decision.changed) == ("balanced", True)
    assert "default" in decision.reason


def test_no_readings_yet_means_the_default() -> None:
    assert governor().decide(None, 0.0).profile_name == "balanced"


def test_hot_switches_to_eco_after_dwell_and_back_only_below_the_exit_threshold() -> None:
    gov = governor(min_dwell_s=30)
    gov.decide(readings(temperature_c=60.0), 0.0)
    held = gov.decide(readings(temperature_c=76.0), 10.0)
    assert held.profile_name == "balanced" and not held.changed
    assert "dwell" in held.reason and "eco" in held.reason
    switched = gov.decide(readings(temperature_c=76.0), 31.0)
    assert (switched.profile_name, switched.changed) == ("eco", True)
    assert "76.0 °C" in switched.reason and "hot" in switched.reason
    assert gov.decide(readings(temperature_c=70.0), 100.0).profile_name == "eco"  # inside the hysteresis band
    back = gov.decide(readings(temperature_c=68.0), 101.0)
    assert (back.profile_name, back.changed) == ("balanced", True)


def test_temperature_oscillating_around_the_threshold_does_not_flap() -> None:
    gov = governor(min_dwell_s=5)
    temperatures = [74.0, 76.0] * 50
    profiles = drive(gov, [(float(t), readings(temperature_c=c)) for t, c in enumerate(temperatures)])
    switches = sum(1 for a, b in pairwise(profiles) if a != b)
    assert switches == 1 and profiles[-1] == "eco"


def test_a_noisy_signal_switches_at_most_once_per_dwell() -> None:
    gov = governor(min_dwell_s=30)
    temperatures = [60.0, 90.0, 60.0, 60.0, 76.0, 60.0] * 20  # critical spikes go through, the rest waits
    decisions = [gov.decide(readings(temperature_c=c), float(t)) for t, c in enumerate(temperatures)]
    switch_times = [t for t, d in enumerate(decisions) if d.changed]
    calm = [b - a for a, b in pairwise(switch_times)
            if decisions[b].profile_name != "parked"]  # moves that are not to the critical profile
    assert all(gap >= 30 for gap in calm)


def test_critical_temperature_skips_the_dwell() -> None:
    gov = governor(min_dwell_s=300)
    gov.decide(readings(), 0.0)
    decision = gov.decide(readings(temperature_c=85.0), 1.0)
    assert (decision.profile_name, decision.changed) == ("parked", True)
    assert "critical" in decision.reason
    cooling = gov.decide(readings(temperature_c=70.0), 2.0)  # critical cleared, still hot: wait for dwell
    assert cooling.profile_name == "parked" and "dwell" in cooling.reason
    assert gov.decide(readings(temperature_c=70.0), 302.0).profile_name == "eco"


def test_unknown_temperature_keeps_the_previous_state() -> None:
    gov = governor(min_dwell_s=0)
    assert gov.decide(readings(temperature_c=80.0), 0.0).profile_name == "eco"
    assert gov.decide(readings(temperature_c=None), 1.0).profile_name == "eco"


@pytest.mark.parametrize(("bits", "reason"), [(0x2, "throttling"), (0x4, "throttling"), (0x8, "throttling"),
                                              (0x1, "under-voltage")])
def test_firmware_bits_move_to_eco(bits: int, reason: str) -> None:
    gov = governor(min_dwell_s=0)
    gov.decide(readings(), 0.0)
    decision = gov.decide(readings(throttled=ThrottleState.from_bits(bits)), 1.0)
    assert decision.profile_name == "eco" and reason in decision.reason


def test_past_throttling_alone_changes_nothing() -> None:
    assert governor().decide(readings(throttled=ThrottleState.from_bits(0xF0000)), 0.0).profile_name == "balanced"


def test_supply_voltage_threshold() -> None:
    gov = governor(min_dwell_s=0, undervoltage_v=4.8)
    assert gov.decide(readings(supply_voltage_v=4.9), 0.0).profile_name == "balanced"
    decision = gov.decide(readings(supply_voltage_v=4.6), 1.0)
    assert decision.profile_name == "eco" and "4.60 V < 4.8 V" in decision.reason


def test_ignition_off_and_on_battery_park_the_device() -> None:
    gov = governor(min_dwell_s=0)
    assert gov.decide(readings(ignition_on=False), 0.0).reason == "ignition off"
    assert gov.decide(readings(ignition_on=True), 1.0).profile_name == "balanced"
    decision = gov.decide(readings(on_battery=True, battery_percent=90.0, charging=False), 2.0)
    assert decision.profile_name == "parked" and decision.reason == "running on battery"


def test_low_battery_has_hysteresis_and_charging_clears_it() -> None:
    gov = governor(min_dwell_s=0, on_battery_profile=None)
    assert gov.decide(readings(battery_percent=50.0, charging=False), 0.0).profile_name == "balanced"
    low = gov.decide(readings(battery_percent=19.0, charging=False), 1.0)
    assert low.profile_name == "parked" and "battery 19.0% low" in low.reason
    assert gov.decide(readings(battery_percent=25.0, charging=False), 2.0).profile_name == "parked"
    assert gov.decide(readings(battery_percent=30.0, charging=False), 3.0).profile_name == "balanced"
    gov.decide(readings(battery_percent=10.0, charging=False), 4.0)
    assert gov.decide(readings(battery_percent=10.0, charging=True), 5.0).profile_name == "balanced"


def test_power_budget_steps_down_when_sustained_and_back_up_below_the_margin() -> None:
    gov = governor(min_dwell_s=10, power_budget_w=6.0, budget_samples=3)
    script = [(float(t), readings(power_w=9.0)) for t in range(3)]
    assert drive(gov, script) == ["balanced", "balanced", "balanced"]  # 3rd sample steps, but dwell holds
    decision = gov.decide(readings(power_w=9.0), 10.0)
    assert decision.profile_name == "eco" and "budget 6.0 W" in decision.reason and "measured" in decision.reason
    assert gov.decide(readings(power_w=5.5), 25.0).profile_name == "eco"  # under budget, not under the margin
    later = drive(gov, [(30.0 + t, readings(power_w=4.0)) for t in range(3)])
    assert later[-1] == "balanced"


def test_a_single_power_spike_does_not_step_down() -> None:
    gov = governor(min_dwell_s=0, power_budget_w=6.0, budget_samples=3)
    profiles = drive(gov, [(0.0, readings(power_w=4.0)), (1.0, readings(power_w=20.0)), (2.0, readings(power_w=4.0)),
                           (3.0, readings(power_w=20.0)), (4.0, readings(power_w=4.0))])
    assert set(profiles) == {"balanced"}


def test_local_override_beats_remote_and_both_act_at_once() -> None:
    gov = governor(min_dwell_s=600)
    gov.decide(readings(), 0.0)
    gov.set_override("eco", "remote")
    assert gov.decide(readings(), 1.0).reason == "remote override"
    gov.set_override("performance", "local")
    decision = gov.decide(readings(), 2.0)
    assert (decision.profile_name, decision.changed, decision.reason) == ("performance", True, "local override")
    gov.set_override(None, "local")
    assert gov.decide(readings(), 3.0).profile_name == "eco"
    gov.set_override(None, "remote")
    assert gov.decide(readings(), 4.0).profile_name == "balanced"
    assert gov.overrides() == {}


def test_override_wins_over_automatic_conditions_but_not_critical_heat() -> None:
    gov = governor(min_dwell_s=0)
    gov.set_override("performance", "remote")
    assert gov.decide(readings(temperature_c=78.0, on_battery=True), 0.0).profile_name == "performance"
    decision = gov.decide(readings(temperature_c=90.0), 1.0)
    assert decision.profile_name == "parked" and "overrules the remote override" in decision.reason


def test_critical_heat_can_be_configured_not_to_beat_an_override() -> None:
    gov = governor(min_dwell_s=0, critical_beats_override=False)
    gov.set_override("performance", "local")
    assert gov.decide(readings(temperature_c=90.0), 0.0).profile_name == "performance"


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'turbo'"):
        governor().set_override("turbo", "local")


def test_rules_naming_missing_profiles_are_refused() -> None:
    profiles = {name: PROFILES[name] for name in ("balanced", "eco")}
    with pytest.raises(ConfigError, match="parked, performance"):
        Governor(profiles, GovernorRules())


def test_each_switch_is_logged_with_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    gov = governor(min_dwell_s=0)
    with capture_logs() as logs:
        monkeypatch.setattr(governor_module, "logger", structlog.get_logger("test"))
        gov.decide(readings(), 0.0)
        gov.decide(readings(), 1.0)
        gov.decide(readings(temperature_c=80.0), 2.0)
    switches = [entry for entry in logs if entry["event"] == "power profile switched"]
    assert [(e["from_profile"], e["to_profile"]) for e in switches] == [(None, "balanced"), ("balanced", "eco")]
    assert "80.0 °C" in switches[1]["reason"]


@pytest.mark.parametrize(("changes", "message"), [
    ({"hot_exit_c": 80.0}, "hot_exit_c must be below hot_enter_c"),
    ({"critical_exit_c": 90.0}, "critical_exit_c must be below"),
    ({"critical_enter_c": 70.0, "critical_exit_c": 60.0}, "critical_enter_c must not be below"),
    ({"battery_recover_percent": 10.0}, "battery_recover_percent must be above"),
    ({"order": ["balanced", "balanced"]}, "must not repeat"),
    ({"order": ["balanced"]}, "must appear in order"),
    ({"hot_enter_c": "75"}, "valid number"),
    ({"min_dwell_s": -1.0}, "greater than or equal"),
    ({"surprise": 1}, "Extra inputs"),
])
def test_rules_are_strict(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GovernorRules(**changes)
