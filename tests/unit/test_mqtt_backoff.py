"""Reconnect delays and the connection supervisor: jitter bounds, auth refusals, one error log."""

from __future__ import annotations

import random

import pytest
import structlog
from paho.mqtt.client import convert_connack_rc_to_reason_code
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
from structlog.testing import LogCapture

from edged.errors import ConfigError
from edged.mqtt import connection as supervisor_module
from edged.mqtt.connection import ConnectionSupervisor, LinkCounters, ReconnectBackoff

ACCEPTED = ReasonCode(PacketTypes.CONNACK, identifier=0)
LOST = ReasonCode(PacketTypes.DISCONNECT, "Unspecified error")


def test_full_jitter_stays_between_min_and_a_doubling_cap() -> None:
    backoff = ReconnectBackoff(0.5, 30.0, 300.0, random.Random(7))
    for attempt in range(40):
        cap = min(30.0, 0.5 * 2 ** (attempt + 1))
        assert 0.5 <= backoff.next_delay() <= cap
    assert backoff.failures == 40


def test_jitter_spreads_a_fleet() -> None:
    delays = {ReconnectBackoff(0.5, 30.0, 300.0, random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20  # no two devices of this "fleet" retry at the same instant


def test_reset_starts_from_the_minimum_again() -> None:
    backoff = ReconnectBackoff(1.0, 1000.0, 300.0, random.Random(1))
    for _ in range(12):
        backoff.next_delay()
    backoff.reset()
    assert 1.0 <= backoff.next_delay() <= 2.0


def test_auth_delay_is_the_slow_retry() -> None:
    assert ReconnectBackoff(0.5, 30.0, 300.0).auth_delay() == 300.0


def test_bad_bounds_are_rejected() -> None:
    with pytest.raises(ConfigError):
        ReconnectBackoff(5.0, 1.0, 300.0)


@pytest.fixture
def captured_logs(monkeypatch: pytest.MonkeyPatch) -> LogCapture:
    capture = LogCapture()
    monkeypatch.setattr(supervisor_module, "logger", structlog.wrap_logger(None, processors=[capture]))
    return capture


def make_supervisor() -> tuple[ConnectionSupervisor, LinkCounters]:
    counters = LinkCounters()
    backoff = ReconnectBackoff(0.1, 2.0, 300.0, random.Random(3))
    return ConnectionSupervisor(backoff, counters, "dev-1", "mqtt://broker:1883"), counters


@pytest.mark.parametrize("refusal", [convert_connack_rc_to_reason_code(4), convert_connack_rc_to_reason_code(5),
                                     ReasonCode(PacketTypes.CONNACK, identifier=0x86),
                                     ReasonCode(PacketTypes.CONNACK, identifier=0x87),
                                     ReasonCode(PacketTypes.CONNACK, identifier=0x8C)])
def test_refused_credentials_retry_slowly_and_log_one_error(refusal: ReasonCode, captured_logs: LogCapture) -> None:
    supervisor, counters = make_supervisor()
    delays = []
    for _ in range(5):
        supervisor.attempt_started()
        assert supervisor.connack(refusal, False) is None
        event, delay = supervisor.connection_closed(LOST, stopping=False)
        assert event is None
        delays.append(delay)
    assert delays == [300.0] * 5
    assert [e["log_level"] for e in captured_logs.entries].count("error") == 1
    assert counters.snapshot()["auth_failures"] == 5
    assert counters.snapshot()["connect_failures"] == 5
    assert counters.snapshot()["connects"] == 0


def test_other_refusals_use_the_fast_backoff(captured_logs: LogCapture) -> None:
    supervisor, counters = make_supervisor()
    supervisor.attempt_started()
    supervisor.connack(convert_connack_rc_to_reason_code(3), False)  # server unavailable
    _, delay = supervisor.connection_closed(LOST, stopping=False)
    assert 0.1 <= delay <= 0.2
    assert counters.get("connect_failures") == 1  # not counted again by the close
    assert counters.get("auth_failures") == 0


def test_a_successful_connect_rearms_the_auth_error_log(captured_logs: LogCapture) -> None:
    supervisor, _ = make_supervisor()
    refusal = convert_connack_rc_to_reason_code(5)
    for accepted in (False, True, False):
        supervisor.attempt_started()
        supervisor.connack(ACCEPTED if accepted else refusal, False)
        supervisor.connection_closed(LOST, stopping=False)
    assert [e["log_level"] for e in captured_logs.entries].count("error") == 2


def test_connect_and_disconnect_events_count_and_number_connections(captured_logs: LogCapture) -> None:
    supervisor, counters = make_supervisor()
    for number in (1, 2):
        supervisor.attempt_started()
        event = supervisor.connack(ACCEPTED, session_present=False)
        assert event is not None and event.connects == number
        assert supervisor.connected
        closed, _ = supervisor.connection_closed(LOST, stopping=False)
        assert closed is not None and closed.connects == number
        assert not supervisor.connected
    assert counters.snapshot()["disconnects"] == 2


def test_a_flapping_connection_keeps_backing_off(captured_logs: LogCapture) -> None:
    supervisor, _ = make_supervisor()
    caps = []
    for _ in range(6):
        supervisor.attempt_started()
        supervisor.connack(ACCEPTED, False)
        _, delay = supervisor.connection_closed(LOST, stopping=False)  # dropped at once
        caps.append(delay)
    assert max(caps[3:]) > 0.2  # the cap grew although each attempt "connected"


def test_a_stable_connection_resets_the_backoff(monkeypatch: pytest.MonkeyPatch, captured_logs: LogCapture) -> None:
    monkeypatch.setattr(supervisor_module, "STABLE_CONNECTION_S", 0.0)
    supervisor, _ = make_supervisor()
    for _ in range(6):
        supervisor.attempt_started()
        supervisor.connack(ACCEPTED, False)
        _, delay = supervisor.connection_closed(LOST, stopping=False)
        assert 0.1 <= delay <= 0.2  # reset, so the first cap applies every time


def test_socket_failures_log_once_per_streak(captured_logs: LogCapture) -> None:
    supervisor, counters = make_supervisor()
    for _ in range(10):
        supervisor.attempt_started()
        supervisor.connect_failed()
    levels = [e["log_level"] for e in captured_logs.entries]
    assert levels.count("warning") == 1
    assert counters.get("connect_failures") == 10
    assert counters.get("connect_attempts") == 10


def test_a_close_before_connack_counts_as_a_failure(captured_logs: LogCapture) -> None:
    supervisor, counters = make_supervisor()
    supervisor.attempt_started()
    event, _ = supervisor.connection_closed(LOST, stopping=False)  # TLS 1.3 certificate rejection
    assert event is None
    assert counters.get("connect_failures") == 1
    assert counters.get("disconnects") == 0
