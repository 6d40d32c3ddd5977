"""What a staged rollout is made of: waves (GROUP[:PERCENT]), thresholds, which devices a wave takes, and
what a device's retained update state means for this release (after hawkBit's rollout groups).

A wave ``GROUP`` offers the release on the group's retained offer topic: every member, also one that joins
later. ``GROUP:PERCENT`` offers it on the device topics of that share of the group's known members, chosen
by sorting them on sha256(release id + device id): the same devices for the same release on every run,
another spread for the next release. Percentages of one group are cumulative (``lab:10 lab:50 lab``: 10 %,
then up to half, then everyone); a device is counted in the first wave that reaches it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Final, Literal

from edged.errors import ConfigError
from edged.fleet.messages import UpdateStateReport

MAX_WAVES: Final = 32
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?$")
_UNIT_S: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION_S: Final = 30 * 86400

Outcome = Literal["pending", "offline", "deferred", "in_progress", "succeeded", "failed"]
ERROR_STATES: Final = frozenset({"rejected", "rolled_back", "failed"})


@dataclass(frozen=True)
class WaveSpec:
    group: str
    percent: int  # 1..100; 100 = the group's offer topic

    @property
    def by_group_topic(self) -> bool:
        return self.percent == 100

    def label(self) -> str:
        return self.group if self.by_group_topic else f"{self.group}:{self.percent}"


def parse_wave(text: str) -> WaveSpec:
    """``GROUP`` or ``GROUP:PERCENT`` (1 to 100)."""
    group, colon, percent_text = text.partition(":")
    if not _NAME.match(group):
        raise ConfigError(f"--wave {text!r}: the group must be a name of letters, digits, '.', '_' or '-' "
                          "(as in the devices' [updates] groups), e.g. --wave canary or --wave lab:25")
    if not colon:
        return WaveSpec(group, 100)
    try:
        percent = int(percent_text.removesuffix("%"), 10)
    except ValueError:
        raise ConfigError(f"--wave {text!r}: PERCENT must be a whole number from 1 to 100") from None
    if not 1 <= percent <= 100:
        raise ConfigError(f"--wave {text!r}: PERCENT must be from 1 to 100")
    return WaveSpec(group, percent)


def parse_waves(texts: list[str]) -> list[WaveSpec]:
    if not texts:
        raise ConfigError("give at least one --wave GROUP[:PERCENT], e.g. --wave canary --wave lab:50 --wave lab")
    if len(texts) > MAX_WAVES:
        raise ConfigError(f"at most {MAX_WAVES} waves")
    waves = [parse_wave(text) for text in texts]
    last: dict[str, int] = {}
    for wave in waves:
        if wave.percent <= last.get(wave.group, 0):
            raise ConfigError(f"--wave {wave.label()}: a later wave of group {wave.group} must take a larger "
                              f"share than the one before ({last[wave.group]} %): percentages are cumulative")
        last[wave.group] = wave.percent
    return waves


def parse_percent(text: str, option: str) -> float:
    try:
        value = float(text.rstrip("%"))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a percentage from 0 to 100, e.g. 90") from None
    if not 0 <= value <= 100 or math.isnan(value):
        raise ConfigError(f"{option} {text!r}: give a percentage from 0 to 100")
    return value


def parse_duration(text: str, option: str = "--wave-timeout") -> float:
    """``90s``, ``30m``, ``2h``, ``1d`` or plain seconds."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise ConfigError(f"{option} {text!r}: give a duration such as 90s, 30m, 2h or 1d")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_DURATION_S:
        raise ConfigError(f"{option} {text!r}: choose from 1 s to 30 d")
    return seconds


def release_id(fleet: str, channel: str, version: int) -> str:
    return f"{fleet}-{channel}-{version}"


def spread_key(release: str, device_id: str) -> str:
    return hashlib.sha256(f"{release}\n{device_id}".encode()).hexdigest()


def share_of(members: list[str], percent: int, release: str) -> list[str]:
    """The first ``percent`` % (rounded up, at least one) of ``members`` in this release's spread order."""
    ordered = sorted(set(members), key=lambda device: spread_key(release, device))
    if not ordered:
        return []
    return ordered[: max(1, math.ceil(len(ordered) * percent / 100))]


def outcome(report: UpdateStateReport | None, presence: str, channel: str, version: int) -> Outcome:
    """What a device's retained update state says about this release."""
    if report is not None:
        about_us = report.release is not None and report.release.channel == channel
        ours = about_us and report.release is not None and report.release.version == version
        serving = report.active is not None and report.active.release is not None
        if report.state == "active" and serving and report.active is not None and report.active.release is not None \
                and report.active.release.channel == channel and report.active.release.version >= version:
            return "succeeded"
        if ours and report.state in ERROR_STATES:
            return "failed"
        if ours and report.state == "deferred":
            return "deferred"
        if ours and report.state != "active":
            return "in_progress"
    return "offline" if presence in ("offline", "stopped") else "pending"
