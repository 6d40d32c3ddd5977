"""The governor's thresholds and profile choices (embedded in the daemon config as ``power.governor``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from edged.power.profiles import PROFILE_NAME_PATTERN
from edged.validation import StrictModel


class GovernorRules(StrictModel):
    """Every threshold has hysteresis: ``*_enter`` switches, ``*_exit``/``*_recover`` switches back."""

    default_profile: str = Field(default="balanced", pattern=PROFILE_NAME_PATTERN,
                                 description="profile when no condition is active")
    order: list[str] = Field(
        default_factory=lambda: ["performance", "balanced", "eco", "parked"], min_length=1, max_length=32,
        description="profiles from most to least power; later means safer; used to rank choices")
    min_dwell_s: float = Field(default=30.0, ge=0, le=3600,
                               description="seconds between switches (critical heat and overrides skip it)")
    hot_profile: str = Field(default="eco", pattern=PROFILE_NAME_PATTERN, description="profile when hot")
    hot_enter_c: float = Field(default=75.0, ge=30, le=120, description="°C at or above which it is hot")
    hot_exit_c: float = Field(default=68.0, ge=20, le=120, description="°C at or below which hot clears")
    critical_profile: str = Field(default="parked", pattern=PROFILE_NAME_PATTERN,
                                  description="profile at a critical temperature, switched to at once")
    critical_enter_c: float = Field(default=82.0, ge=30, le=130, description="critical from this °C")
    critical_exit_c: float = Field(default=75.0, ge=20, le=130, description="critical clears at this °C")
    critical_beats_override: bool = Field(default=True,
                                          description="a critical temperature overrules operator overrides")
    throttled_profile: str = Field(default="eco", pattern=PROFILE_NAME_PATTERN,
                                   description="profile while firmware caps/throttles the CPU")
    undervoltage_profile: str = Field(default="eco", pattern=PROFILE_NAME_PATTERN,
                                      description="profile on supply under-voltage")
    undervoltage_v: float | None = Field(default=None, gt=0, le=60,
                                         description="supply V below which it is under-voltage; absent = "
                                                     "only the firmware under-voltage bit counts")
    ignition_off_profile: str = Field(default="parked", pattern=PROFILE_NAME_PATTERN,
                                      description="profile while the vehicle ignition is off")
    on_battery_profile: str | None = Field(default="parked", pattern=PROFILE_NAME_PATTERN,
                                           description="profile on battery; absent = no change on battery")
    low_battery_profile: str = Field(default="parked", pattern=PROFILE_NAME_PATTERN,
                                     description="profile when the battery is low and not charging")
    battery_low_percent: float = Field(default=20.0, ge=0, le=100, description="low at or below this %")
    battery_recover_percent: float = Field(default=30.0, ge=0, le=100, description="low clears at this %")
    power_budget_w: float | None = Field(default=None, gt=0, le=1000,
                                         description="device power budget in W; absent = none")
    budget_margin: float = Field(default=0.15, ge=0, lt=1,
                                 description="step back up only below budget × (1 - margin)")
    budget_samples: int = Field(default=3, ge=1, le=100,
                                description="consecutive decisions over/under budget before a step")

    @field_validator("order")
    @classmethod
    def _unique_order(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("order must not repeat a profile")
        return value

    @model_validator(mode="after")
    def _hysteresis(self) -> GovernorRules:
        if self.hot_exit_c >= self.hot_enter_c:
            raise ValueError("hot_exit_c must be below hot_enter_c")
        if self.critical_exit_c >= self.critical_enter_c:
            raise ValueError("critical_exit_c must be below critical_enter_c")
        if self.critical_enter_c < self.hot_enter_c:
            raise ValueError("critical_enter_c must not be below hot_enter_c")
        if self.battery_recover_percent <= self.battery_low_percent:
            raise ValueError("battery_recover_percent must be above battery_low_percent")
        outside = sorted(set(self.referenced_profiles()) - set(self.order))
        if outside:
            raise ValueError(f"profiles used by rules must appear in order: {', '.join(outside)}")
        return self

    def referenced_profiles(self) -> list[str]:
        names = [self.default_profile, self.hot_profile, self.critical_profile, self.throttled_profile,
                 self.undervoltage_profile, self.ignition_off_profile, self.low_battery_profile, *self.order]
        if self.on_battery_profile is not None:
            names.append(self.on_battery_profile)
        return names
