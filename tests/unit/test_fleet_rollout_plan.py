"""Rollout waves, thresholds, durations, the deterministic device share, and what a device's state means."""

from __future__ import annotations

import pytest

from edged.errors import ConfigError
from edged.fleet.depot.rollout_plan import (
    WaveSpec,
    outcome,
    parse_duration,
    parse_percent,
    parse_wave,
    parse_waves,
    share_of,
    spread_key,
)
from edged.fleet.messages import ActiveModel, ReleaseRef, UpdateStateReport, parse_state


def test_waves_parse_group_and_percent() -> None:
    assert parse_wave("canary") == WaveSpec("canary", 100)
    assert parse_wave("lab:25") == WaveSpec("lab", 25)
    assert parse_wave("lab:25%") == WaveSpec("lab", 25)
    assert [w.label() for w in parse_waves(["canary", "lab:10", "lab:50", "lab"])] == ["canary", "lab:10", "lab:50",
                                                                                         "lab"]


@pytest.mark.parametrize("bad", ["", ":5", "lab:", "lab:0", "lab:101", "lab:x", "la b", "a/b", "+", "#", "lab:5:5",
                                 "x" * 65, "../etc", "lab:-3", "lab:1e2"])
def test_bad_waves_are_refused_with_an_example(bad: str) -> None:
    with pytest.raises(ConfigError, match="--wave"):
        parse_wave(bad)


def test_percentages_of_a_group_must_grow_and_waves_are_bounded() -> None:
    with pytest.raises(ConfigError, match="cumulative"):
        parse_waves(["lab:50", "lab:10"])
    with pytest.raises(ConfigError, match="cumulative"):
        parse_waves(["lab", "lab"])
    with pytest.raises(ConfigError, match="at least one"):
        parse_waves([])
    with pytest.raises(ConfigError, match="at most"):
        parse_waves([f"g{i}" for i in range(33)])


def test_durations_and_percentages() -> None:
    assert parse_duration("90s") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400 and parse_duration("45") == 45 and parse_duration("1.5m") == 90
    for bad in ("", "10x", "-5m", "0s", "31d", "1e9", "nan", "inf", "5 m m"):
        with pytest.raises(ConfigError, match="--wave-timeout"):
            parse_duration(bad)
    assert parse_percent("90", "--x") == 90 and parse_percent("2.5%", "--x") == 2.5
    for bad in ("-1", "101", "nan", "x", ""):
        with pytest.raises(ConfigError, match="--x"):
            parse_percent(bad, "--x")


def test_the_share_is_deterministic_rounds_up_and_differs_between_releases() -> None:
    members = [f"pi-{i}" for i in range(10)]
    first = share_of(members, 25, "default-stable-7")
    assert len(first) == 3 and first == share_of(list(reversed(members)), 25, "default-stable-7")
    assert share_of(members, 50, "default-stable-7")[:3] == first  # cumulative: a larger share keeps the smaller
    assert share_of(members, 1, "default-stable-7") == first[:1]  # at least one device
    assert share_of([], 50, "r") == []
    spreads = {tuple(share_of(members, 30, f"default-stable-{v}")) for v in range(1, 20)}
    assert len(spreads) > 5  # another release spreads over other devices
    assert spread_key("a-b-1", "x") != spread_key("a-b-1x", "")  # the separator keeps ids apart


def _report(state: str, version: int | None = 7, active_version: int | None = 6, channel: str = "stable",
            reason: str | None = None) -> UpdateStateReport:
    active = ActiveModel(slot="slot-a", model="m.gguf",
                         release=None if active_version is None else ReleaseRef(channel=channel,
                                                                                version=active_version))
    return UpdateStateReport(device_id="pi-1", state=state, reason=reason,  # type: ignore[arg-type]
                             release=None if version is None else ReleaseRef(channel=channel, version=version),
                             active=active)


def test_outcome_of_each_state_for_this_release() -> None:
    assert outcome(None, "online", "stable", 7) == "pending"
    assert outcome(None, "offline", "stable", 7) == "offline"
    assert outcome(None, "stopped", "stable", 7) == "offline"
    assert outcome(_report("active", 7, 7), "online", "stable", 7) == "succeeded"
    assert outcome(_report("active", 8, 8), "online", "stable", 7) == "succeeded"  # already past it
    assert outcome(_report("active", 6, 6), "online", "stable", 7) == "pending"  # not offered yet
    assert outcome(_report("downloading"), "online", "stable", 7) == "in_progress"
    assert outcome(_report("installing"), "offline", "stable", 7) == "in_progress"
    assert outcome(_report("deferred", reason="install_window"), "online", "stable", 7) == "deferred"
    for failed in ("rejected", "rolled_back", "failed"):
        assert outcome(_report(failed, reason="load"), "online", "stable", 7) == "failed"
        assert outcome(_report(failed, version=6, reason="load"), "online", "stable", 7) == "pending"
    assert outcome(_report("active", 7, 7, channel="beta"), "online", "stable", 7) == "pending"  # other channel
    assert outcome(_report("active", 7, None), "online", "stable", 7) == "pending"  # configured model serves


def test_deferred_is_a_state_the_wire_accepts() -> None:
    report = parse_state(b'{"device_id":"pi-1","state":"deferred","reason":"install_window",'
                         b'"release":{"channel":"stable","version":7}}')
    assert report.label() == "deferred (install_window)"
