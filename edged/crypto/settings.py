"""The e2e-v1 settings section, ready to embed in the daemon's config tree (``[e2e]`` in TOML).

Only pydantic and the layout sizes: the config is read before the model starts loading, and the
cryptography library is imported while it loads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

from pydantic import Field, Strict, model_validator

from edged.crypto.clock import ClockPolicy
from edged.crypto.limits import DEFAULT_MAX_REQUEST_BYTES, MIN_REQUEST_LEN
from edged.crypto.replay import DEFAULT_MAX_ENTRIES
from edged.validation import StrictModel


class TimestampWindow(StrictModel):
    """How far a request's ts_ms may lie from the device clock."""

    past_s: float = Field(default=120.0, ge=1.0, le=3600.0, description="oldest accepted request age, seconds")
    future_s: float = Field(default=30.0, ge=0.0, le=600.0, description="largest accepted clock lead of a client, seconds")


DEFAULT_WINDOW = TimestampWindow()


class PrekeySchedule(StrictModel):
    """When prekeys are made, how long they are valid and how long their private keys are kept."""

    rotate_every_s: int = Field(default=12 * 3600, ge=60, le=7 * 86400, description="make a new prekey this often")
    valid_for_s: int = Field(default=24 * 3600, ge=120, le=30 * 86400, description="validity of each prekey from creation")
    not_before_skew_s: int = Field(default=60, ge=0, le=3600,
                                   description="not_before lies this far in the past, for clients whose clock lags")
    keep_after_expiry_s: int = Field(default=120, ge=0, le=3600,
                                     description="keep the private key this long after not_after (the window's past)")

    @model_validator(mode="after")
    def _overlap(self) -> PrekeySchedule:
        if self.valid_for_s <= self.rotate_every_s:
            raise ValueError("valid_for_s must exceed rotate_every_s so consecutive prekeys overlap")
        return self


class E2ESettings(StrictModel):
    """Knobs of the end-to-end envelope; every default follows spec e2e-v1."""

    window: TimestampWindow = Field(default_factory=TimestampWindow,
                                    description="accepted request age (past_s) and clock lead (future_s)")
    prekeys: PrekeySchedule = Field(default_factory=PrekeySchedule,
                                    description="prekey rotation, validity and key deletion schedule")
    clock_policy: ClockPolicy = Field(
        default="reject", description="with an unsynchronised clock: 'reject' MQTT requests, or 'accept-unsynced' "
                              "them without the timestamp check (replay then bounded by the prekey life); "
                              "'trust-system-clock' treats the clock as synchronised (VMs, containers)")
    max_request_bytes: int = Field(default=DEFAULT_MAX_REQUEST_BYTES, ge=MIN_REQUEST_LEN + 1024, le=16 * 1024 * 1024,
                                   description="largest sealed request; bigger ones are dropped before any crypto")
    replay_max_entries: int = Field(default=DEFAULT_MAX_ENTRIES, ge=16, le=10_000_000,
                                    description="replay cache size; when full, new requests are refused")
    clients_file: Annotated[Path, Strict(False)] | None = Field(
        default=None, description="client allow-list; default <state dir>/clients.toml")
    allow_list_check_s: float = Field(default=5.0, ge=0.5, le=3600.0,
                                      description="how often the allow-list file is checked for changes")

    @model_validator(mode="after")
    def _keep_prekeys_for_the_window(self) -> E2ESettings:
        if self.prekeys.keep_after_expiry_s < math.ceil(self.window.past_s):
            raise ValueError("prekeys.keep_after_expiry_s must be at least window.past_s, or requests sent "
                             "just before a prekey expires could not be opened")
        return self
