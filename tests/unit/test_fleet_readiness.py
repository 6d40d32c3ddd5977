"""The operator's warnings before a push, from a device's retained status (edged/fleet/depot/readiness.py)."""

from __future__ import annotations

from edged.fleet.depot.readiness import push_warnings

ONLINE = {"state": "online", "device_id": "pi-1"}


def test_a_ready_device_gets_no_warning():
    ready = {"enabled": True, "clock_policy": "reject", "clock_synchronised": True, "blocked_by_clock": False}
    assert push_warnings("pi-1", {**ONLINE, "updates": ready}, retained=True) == []


def test_updates_off_says_what_to_add():
    [warning] = push_warnings("pi-1", {**ONLINE, "updates": {"enabled": False}}, retained=True)
    assert "updates are off" in warning and "add [updates]" in warning


def test_a_clock_that_blocks_updates_says_how_to_fix_it():
    blocked = {"enabled": True, "clock_policy": "reject", "clock_synchronised": False, "blocked_by_clock": True}
    [warning] = push_warnings("pi-1", {**ONLINE, "updates": blocked}, retained=True)
    assert "not synchronised" in warning and "timedatectl set-ntp true" in warning and "trust-system-clock" in warning


def test_an_unsynchronised_clock_under_trust_system_clock_is_no_obstacle():
    trusting = {"enabled": True, "clock_policy": "trust-system-clock", "clock_synchronised": False,
                "blocked_by_clock": False}
    assert push_warnings("pi-1", {**ONLINE, "updates": trusting}, retained=True) == []


def test_no_status_and_offline_devices():
    assert "stays retained" in push_warnings("pi-1", None, retained=True)[0]
    assert "never see the offer" in push_warnings("pi-1", None, retained=False)[0]
    [offline] = push_warnings("pi-1", {"state": "offline"}, retained=True)
    assert "is offline" in offline


def test_an_older_edged_without_readiness_is_not_second_guessed():
    assert push_warnings("pi-1", ONLINE, retained=True) == []


def test_an_install_policy_is_mentioned_and_hostile_values_are_not_echoed():
    ready = {"enabled": True, "clock_policy": "reject", "clock_synchronised": True, "blocked_by_clock": False}
    both = {**ready, "install_window": "02:00-05:00", "install_when": "parked"}
    [note] = push_warnings("pi-1", {**ONLINE, "updates": both}, retained=True)
    assert "installs it only between 02:00-05:00 local time and when parked" in note and "deferred" in note
    assert push_warnings("pi-1", {**ONLINE, "updates": {**ready, "install_window": None, "install_when": "any"}},
                         retained=True) == []
    for window, when in (("\x1b[2J02:00", "now"), (["02:00-05:00"], 7), ("1" * 5000, None)):
        assert push_warnings("pi-1", {**ONLINE, "updates": {**ready, "install_window": window, "install_when": when}},
                             retained=True) == []
