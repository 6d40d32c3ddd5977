"""Picks the active power profile from readings, with hysteresis, minimum dwell and overrides.

Precedence, highest first:
1. a critical temperature (>= ``critical_enter_c``) forces ``critical_profile`` at once, even over an
   override, unless ``critical_beats_override`` is false: an operator cannot cook the board;
2. a local override (Unix socket, someone at the device) beats a remote one (fleet MQTT);
3. a remote override;
4. automatic rules: the most restrictive profile (latest in ``order``) any active condition asks
   for, else ``default_profile``.
Switches wait ``min_dwell_s`` after the previous switch, except: the first decision, a critical
temperature moving to a safer profile, and setting or clearing an override (operator intent acts
at once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from edged.errors import ConfigError
from edged.power.governor_rules import GovernorRules
from edged.power.profiles import Profile
from edged.power.readings import Readings

logger = structlog.get_logger(__name__)

OverrideSource = Literal["local", "remote"]

__all__ = ["Decision", "Governor", "GovernorRules", "OverrideSource"]


@dataclass(frozen=True)
class Decision:
    profile_name: str
    reason: str
    changed: bool


@dataclass(frozen=True)
class _Want:
    profile: str
    reason: str
    critical: bool = False


class Governor:
    """Stateful: keeps hysteresis flags, the budget step and the time of the last switch."""

    def __init__(self, profiles: Mapping[str, Profile], rules: GovernorRules) -> None:
        missing = sorted(set(rules.referenced_profiles()) - set(profiles))
        if missing:
            raise ConfigError(f"power.governor: unknown profile(s) {', '.join(missing)}; "
                              f"loaded: {', '.join(sorted(profiles))}")
        self.profiles = profiles
        self.rules = rules
        self.active: str | None = None
        self.reason = "not decided yet"
        self._switched_at = -math.inf
        self._overrides: dict[OverrideSource, str] = {}
        self._override_changed = False
        self._hot = False
        self._critical = False
        self._battery_low = False
        self._budget_steps = 0
        self._budget_over = 0
        self._budget_under = 0
        self._budget_changed_at = -math.inf

    def rank(self, name: str) -> int:
        """Position in ``rules.order``; profiles outside it rank as the least safe."""
        return self.rules.order.index(name) if name in self.rules.order else -1

    def set_override(self, name: str | None, source: OverrideSource) -> None:
        """Pin a profile until cleared with ``None``; raises ConfigError for an unknown name."""
        if name is not None and name not in self.profiles:
            raise ConfigError(f"unknown profile {name!r}; known: {', '.join(sorted(self.profiles))}")
        if name is None:
            self._overrides.pop(source, None)
        else:
            self._overrides[source] = name
        self._override_changed = True
        logger.info("power profile override", source=source, profile=name)

    def overrides(self) -> dict[str, str]:
        return {str(source): name for source, name in self._overrides.items()}

    def _update_flags(self, readings: Readings) -> None:
        rules = self.rules
        if (temperature := readings.temperature_c) is not None:
            # Unknown temperature keeps the previous state: a vanished sensor must not cool us down.
            self._critical = temperature >= rules.critical_enter_c or (
                self._critical and temperature > rules.critical_exit_c)
            self._hot = temperature >= rules.hot_enter_c or (self._hot and temperature > rules.hot_exit_c)
        if readings.charging:
            self._battery_low = False
        elif (percent := readings.battery_percent) is not None:
            self._battery_low = percent <= rules.battery_low_percent or (
                self._battery_low and percent < rules.battery_recover_percent)

    def _conditions(self, readings: Readings) -> list[_Want]:
        rules, wants = self.rules, []
        temperature = readings.temperature_c
        if self._critical:
            wants.append(_Want(rules.critical_profile, f"temperature {temperature} °C: critical "
                               f"(>= {rules.critical_enter_c} °C, clears at {rules.critical_exit_c} °C)", True))
        if self._hot:
            wants.append(_Want(rules.hot_profile, f"temperature {temperature} °C: hot "
                               f"(>= {rules.hot_enter_c} °C, clears at {rules.hot_exit_c} °C)"))
        throttle = readings.throttled
        if throttle is not None and throttle.thermally_limited:
            wants.append(_Want(rules.throttled_profile, f"firmware throttling active ({hex(throttle.raw)})"))
        if throttle is not None and throttle.under_voltage:
            wants.append(_Want(rules.undervoltage_profile, f"supply under-voltage ({hex(throttle.raw)})"))
        volts = readings.supply_voltage_v
        if rules.undervoltage_v is not None and volts is not None and volts < rules.undervoltage_v:
            wants.append(_Want(rules.undervoltage_profile, f"supply {volts:.2f} V < {rules.undervoltage_v} V"))
        if readings.ignition_on is False:
            wants.append(_Want(rules.ignition_off_profile, "ignition off"))
        if readings.on_battery and rules.on_battery_profile is not None:
            wants.append(_Want(rules.on_battery_profile, "running on battery"))
        if self._battery_low:
            wants.append(_Want(rules.low_battery_profile, f"battery {readings.battery_percent}% low "
                               f"(<= {rules.battery_low_percent}%, clears at {rules.battery_recover_percent}%)"))
        return wants

    def _budget(self, readings: Readings, now: float, base: str) -> _Want | None:
        budget, power = self.rules.power_budget_w, readings.power_w
        if budget is None:
            return None
        if power is not None:
            self._budget_over = self._budget_over + 1 if power > budget else 0
            low_mark = budget * (1 - self.rules.budget_margin)
            self._budget_under = self._budget_under + 1 if power < low_mark else 0
            ready = now - self._budget_changed_at >= self.rules.min_dwell_s
            if ready and self._budget_over >= self.rules.budget_samples:
                self._budget_steps = min(self._budget_steps + 1, len(self.rules.order) - 1)
                self._budget_changed_at, self._budget_over = now, 0
            elif ready and self._budget_steps and self._budget_under >= self.rules.budget_samples:
                self._budget_steps -= 1
                self._budget_changed_at, self._budget_under = now, 0
        if not self._budget_steps:
            return None
        index = min(max(self.rank(base), 0) + self._budget_steps, len(self.rules.order) - 1)
        source = "estimated" if readings.power_estimated else "measured"
        shown = "unknown" if power is None else f"{power:.1f} W"
        return _Want(self.rules.order[index], f"power {shown} ({source}) vs budget {budget} W: "
                     f"{self._budget_steps} step(s) down")

    def _automatic(self, readings: Readings | None, now: float) -> _Want:
        if readings is None:
            return _Want(self.rules.default_profile, "no readings yet: default profile")
        self._update_flags(readings)
        wants = self._conditions(readings)
        base = max(wants, key=lambda want: self.rank(want.profile)) if wants else None
        budget = self._budget(readings, now, base.profile if base else self.rules.default_profile)
        if budget is not None:
            wants.append(budget)
        if not wants:
            return _Want(self.rules.default_profile, "no constraint active: default profile")
        # The most restrictive wins; the critical flag survives when it ties for the top.
        top = max(self.rank(want.profile) for want in wants)
        winners = [want for want in wants if self.rank(want.profile) == top]
        return next((want for want in winners if want.critical), winners[0])

    def decide(self, readings: Readings | None, now: float) -> Decision:
        """The profile to run now and why; ``changed`` is true exactly when a switch happens."""
        want = self._automatic(readings, now)
        override_source: OverrideSource | None = (
            "local" if "local" in self._overrides else "remote" if self._overrides else None)
        if override_source is not None:
            pinned = self._overrides[override_source]
            overruled = (want.critical and self.rules.critical_beats_override
                         and self.rank(want.profile) > self.rank(pinned))
            if overruled:
                want = _Want(want.profile, f"{want.reason}; overrules the {override_source} override", True)
            else:
                want = _Want(pinned, f"{override_source} override")
        immediate = self.active is None or self._override_changed or (
            want.critical and self.rank(want.profile) > self.rank(self.active))
        self._override_changed = False
        if want.profile == self.active:
            self.reason = want.reason
            return Decision(want.profile, want.reason, False)
        waited = now - self._switched_at
        if not immediate and waited < self.rules.min_dwell_s:
            left = self.rules.min_dwell_s - waited
            reason = f"holding {self.active} for minimum dwell ({left:.0f} s left); wants {want.profile}: {want.reason}"
            assert self.active is not None
            return Decision(self.active, reason, False)
        logger.info("power profile switched", from_profile=self.active, to_profile=want.profile, reason=want.reason)
        self.active, self.reason, self._switched_at = want.profile, want.reason, now
        return Decision(want.profile, want.reason, True)
