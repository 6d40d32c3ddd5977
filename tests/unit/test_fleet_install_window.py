"""The install window and the install decision: parsing, hostile input, midnight, DST, every combination."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given, strategies as st

from edged.config import load_config
from edged.errors import ConfigError
from edged.fleet.device.install_policy import MAX_SLEEP_S, InstallPolicy, decide
from edged.fleet.install_window import InstallWindow, parse_window
from edged.fleet.settings import UpdateSettings
from edged.state import InstallState
from edged.testing import read_clock_file



def berlin() -> ZoneInfo:
    # The system's time zone database: Debian and Raspberry Pi OS always have it (tzdata is required),
    # the minimal arm64 test root does not.
    try:
        return ZoneInfo("Europe/Berlin")
    except ZoneInfoNotFoundError:
        pytest.skip("no time zone database here (no tzdata): the DST cases need Europe/Berlin")
MQTT = {"EDGED_MQTT__URL": "mqtt://broker.local:1883"}


def at(hhmm: str, tz: timezone | ZoneInfo = UTC, day: tuple[int, int, int] = (2026, 12, 1)) -> datetime:
    hours, minutes = (int(part) for part in hhmm.split(":"))
    return datetime(*day, hours, minutes, tzinfo=tz)


@pytest.mark.parametrize("text, start, end", [("02:00-05:00", 120, 300), ("22:00-05:00", 1320, 300),
                                              ("00:00-23:59", 0, 1439), ("23:30-00:00", 1410, 0)])
def test_windows_parse_and_print_back(text, start, end):
    window = parse_window(text)
    assert (window.start, window.end) == (start, end) and str(window) == text


@pytest.mark.parametrize("text, says", [
    ("24:00-05:00", "start time 24:00 is not a time of day"), ("02:00-24:00", "end time 24:00"),
    ("02:60-05:00", "02:60"), ("02:00-02:00", "empty"), ("", "HH:MM-HH:MM"), ("2:00-5:00", "HH:MM-HH:MM"),
    ("02:00 - 05:00", "HH:MM-HH:MM"), ("02:00-05:00\n", "HH:MM-HH:MM"), ("02:00-05:00;rm -rf /", "HH:MM-HH:MM"),
    ("٠٢:٠٠-٠٥:٠٠", "HH:MM-HH:MM"), ("02:00", "HH:MM-HH:MM"), ("02:00-05:00-07:00", "HH:MM-HH:MM"),
    ("0" * 10_000, "not 10000 characters"), ("02:00:00-05:00:00", "HH:MM-HH:MM"), ("-1:00-05:00", "HH:MM-HH:MM"),
])
def test_malformed_windows_are_refused_with_what_to_write(text, says):
    with pytest.raises(ValueError, match=says):
        parse_window(text)


@pytest.mark.parametrize("value", ["24:00-01:00", "", "soon", "02:00-02:00", "x" * 100])
def test_the_config_error_names_the_key(value):
    with pytest.raises(ConfigError, match=r"updates\.install_window"):
        load_config(None, {**MQTT, "EDGED_UPDATES__INSTALL_WINDOW": value})


@pytest.mark.parametrize("value", ["sometimes", "IDLE", "", "parked "])
def test_install_when_is_one_of_three_words(value):
    with pytest.raises(ConfigError, match=r"updates\.install_when.*'any', 'idle' or 'parked'"):
        load_config(None, {**MQTT, "EDGED_UPDATES__INSTALL_WHEN": value})


def test_config_file_keys_and_defaults(tmp_path: Path):
    path = tmp_path / "edged.toml"
    path.write_text('[mqtt]\nurl = "mqtt://b:1883"\n[updates]\ninstall_window = "22:00-05:00"\n'
                    'install_when = "parked"\n')
    updates = load_config(path, {}).updates
    assert updates is not None and updates.window() == InstallWindow(1320, 300) and updates.install_when == "parked"
    assert UpdateSettings().window() is None and UpdateSettings().install_when == "any"
    path.write_text('[mqtt]\nurl = "mqtt://b:1883"\n[updates]\ninstall_window = 2\n')
    with pytest.raises(ConfigError, match=r"updates\.install_window"):
        load_config(path, {})


def test_midnight_crossing_window_contains_both_sides():
    window = parse_window("22:00-05:00")
    inside = ["22:00", "23:59", "00:00", "03:15", "04:59"]
    outside = ["05:00", "12:00", "21:59"]
    assert all(window.contains(at(t)) for t in inside) and not any(window.contains(at(t)) for t in outside)


def test_seconds_until_open_in_plain_time():
    window = parse_window("02:00-05:00")
    assert window.seconds_until_open(at("01:00")) == 3600
    assert window.seconds_until_open(at("02:00")) == 0 and window.seconds_until_open(at("04:59")) == 0
    assert window.seconds_until_open(at("05:00")) == 21 * 3600  # tomorrow's
    assert parse_window("22:00-05:00").seconds_until_open(at("21:30")) == 1800
    with pytest.raises(ValueError, match="aware"):
        window.seconds_until_open(datetime(2026, 12, 1, 1, 0))


def test_dst_changes_shift_nothing_on_the_wall_clock():
    BERLIN = berlin()  # noqa: N806  (the zone, named as the constant it was)
    window = parse_window("02:00-05:00")
    # 2026-03-29 in Berlin: 02:00 CET becomes 03:00 CEST, so 02:00 never shows: it opens at 03:00, 1.5 h later
    spring = datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN)
    opens = spring.astimezone(UTC) + timedelta(seconds=window.seconds_until_open(spring))
    assert window.seconds_until_open(spring) == 1.5 * 3600 and opens.astimezone(BERLIN).hour == 3
    assert window.contains(opens.astimezone(BERLIN))
    # 2026-10-25: 03:00 CEST becomes 02:00 CET; from 23:00 the day before, 02:00 CEST is 3 real hours away
    autumn = datetime(2026, 10, 24, 23, 0, tzinfo=BERLIN)
    assert window.seconds_until_open(autumn) == 3 * 3600
    late = parse_window("04:00-05:00").seconds_until_open(autumn)
    assert late == 6 * 3600  # 23:00 CEST to 04:00 CET: five wall hours, six real ones
    assert window.contains(datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=BERLIN))


@given(st.integers(0, 1439), st.integers(0, 1439), st.integers(0, 10 * 24 * 60))
def test_the_window_opens_exactly_when_the_clock_enters_it(start, end, minute_of_run):
    if start == end:
        return
    window = InstallWindow(start, end)
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minute_of_run)
    left = window.seconds_until_open(now)
    assert 0 <= left <= 24 * 3600
    assert window.contains(now + timedelta(seconds=left))
    if left >= 60:
        assert not window.contains(now + timedelta(seconds=left - 60))


STATES = [InstallState(busy=busy, profile="parked" if parked else "balanced", parked=parked,
                       profile_allows_installs=allows)
          for busy, parked, allows in itertools.product((False, True), repeat=3)]


@pytest.mark.parametrize("when", ["any", "idle", "parked"])
@pytest.mark.parametrize("window", [None, "02:00-05:00", "22:00-05:00"])
@pytest.mark.parametrize("clock", ["01:00", "03:00", "23:00"])
@pytest.mark.parametrize("state", STATES,
                         ids=lambda s: f"busy={s.busy},parked={s.parked},allows={s.profile_allows_installs}")
def test_every_combination_decides_by_the_first_reason_that_holds(when, window, clock, state):
    policy = InstallPolicy(parse_window(window) if window else None, when)  # type: ignore[arg-type]
    now = at(clock)
    deferral = decide(policy, now, state)
    expected = None
    if policy.window is not None and not policy.window.contains(now):
        expected = "install_window"
    elif when == "parked" and not state.parked:
        expected = "not_parked"
    elif not state.profile_allows_installs:
        expected = "profile"
    elif when == "idle" and state.busy:
        expected = "busy"
    assert (deferral.reason if deferral else None) == expected
    if deferral is not None:
        assert 0 < deferral.recheck_in_s <= MAX_SLEEP_S and deferral.detail


def test_the_details_say_when_and_why():
    idle = InstallState(busy=True, profile="balanced", parked=False, profile_allows_installs=False)
    window = decide(InstallPolicy(parse_window("02:00-05:00"), "any"), at("01:00"), idle)
    assert window is not None and window.detail == "installs after 02:00 local time (window 02:00-05:00)"
    assert window.recheck_in_s == MAX_SLEEP_S  # an hour away: looked at again before then (clock jumps)
    soon = decide(InstallPolicy(parse_window("02:00-05:00"), "any"), at("01:58"), idle)
    assert soon is not None and soon.recheck_in_s == 120
    parked = decide(InstallPolicy(None, "parked"), at("01:00"), idle)
    assert parked is not None and "parked" in parked.detail and "balanced" in parked.detail
    profile = decide(InstallPolicy(None, "idle"), at("01:00"), idle)
    assert profile is not None and profile.detail == "the balanced profile does not allow installs"


@pytest.mark.parametrize("content", [b"", b"tomorrow", b"2026-13-01T00:00:00", b"\xff\xfe", b"2" * 100,
                                     b"2026-12-01T01:00:00\x00"])
def test_the_test_clock_file_refuses_anything_but_one_time(tmp_path: Path, content: bytes):
    path = tmp_path / "clock"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="ISO 8601"):
        read_clock_file(path)


def test_the_test_clock_file_reads_local_and_offset_times(tmp_path: Path):
    path = tmp_path / "clock"
    path.write_text("2026-12-01T01:30:00\n")
    local = read_clock_file(path)
    assert local.tzinfo is not None and (local.hour, local.minute) == (1, 30)
    path.write_text("2026-12-01T01:30:00+05:00")
    assert read_clock_file(path).utcoffset() == timedelta(hours=5)
