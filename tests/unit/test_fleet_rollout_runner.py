"""The rollout's decisions over a roster fed with retained messages: waves, thresholds, timeout, abort, restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edged.fleet.depot.rollout_roster import FleetRoster
from edged.fleet.depot.rollout_runner import Rollout
from edged.fleet.depot.rollout_state import RolloutState, RolloutStore, WaveRecord
from edged.mqtt.inbound import InboundMessage

ENVELOPE = b'{"signed": "manifest"}'


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


class Broker:
    """Records what the rollout publishes; the roster is fed by the test."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def __call__(self, messages: list[tuple[str, bytes]]) -> None:
        self.published.extend(messages)

    def topics(self, payload: bytes | None = None) -> list[str]:
        return [t for t, p in self.published if payload is None or p == payload]


def status(roster: FleetRoster, device: str, groups: list[str], state: str = "online", fleet: str = "default") -> None:
    payload = json.dumps({"state": state, "device_id": device, "updates": {"enabled": True, "fleet": fleet,
                                                                           "groups": groups}}).encode()
    assert roster.apply(InboundMessage(topic=f"edged/{device}/status", payload=payload, qos=1))


def report(roster: FleetRoster, device: str, state: str, version: int = 7, active: int = 6,
           reason: str | None = None) -> None:
    body: dict[str, Any] = {"device_id": device, "state": state, "release": {"channel": "stable", "version": version},
                            "active": {"slot": "slot-a", "model": f"m-v{active}.gguf",
                                       "release": {"channel": "stable", "version": active}}}
    if reason:
        body["reason"] = reason
    assert roster.apply(InboundMessage(topic=f"edged/{device}/update/state", payload=json.dumps(body).encode(), qos=1))


def new_state(waves: list[tuple[str, int]], success: float = 100, error: float = 0, timeout: float = 60) -> RolloutState:
    return RolloutState(id="default-stable-7", fleet="default", channel="stable", version=7, manifest_sha256="0" * 64,
                        manifest_path="/m.json", topic_prefix="edged", success_threshold=success,
                        error_threshold=error, wave_timeout_s=timeout,
                        waves=[WaveRecord(group=g, percent=p) for g, p in waves], created_unix_ms=0,
                        updated_unix_ms=0)


@pytest.fixture
def fleet() -> FleetRoster:
    roster = FleetRoster("edged")
    status(roster, "canary-1", ["canary"])
    for i in range(1, 5):
        status(roster, f"lab-{i}", ["lab"])
    for device in ("canary-1", "lab-1", "lab-2", "lab-3", "lab-4"):
        report(roster, device, "active", version=6, active=6)
    return roster


def make(tmp_path: Path, roster: FleetRoster, state: RolloutState, clock: Clock | None = None
         ) -> tuple[Rollout, Broker, RolloutStore]:
    store, broker = RolloutStore(tmp_path), Broker()
    return Rollout(store, store.save(state), ENVELOPE, roster, broker, clock or Clock()), broker, store


def test_two_waves_go_through_and_the_second_waits_for_the_first(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, store = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)]))
    state = rollout.step()
    assert broker.topics() == ["edged/fleet/default/group/canary/offer"]
    assert state.current_wave() == 0 and set(state.waves[0].devices) == {"canary-1"}
    report(fleet, "canary-1", "downloading")
    assert rollout.step().waves[0].counts()["in_progress"] == 1 and len(broker.published) == 1
    report(fleet, "canary-1", "active", active=7)
    state = rollout.step()
    assert broker.topics()[-1] == "edged/fleet/default/group/lab/offer" and state.current_wave() == 1
    assert set(state.waves[1].devices) == {"lab-1", "lab-2", "lab-3", "lab-4"}
    for i in range(1, 5):
        report(fleet, f"lab-{i}", "active", active=7)
    state = rollout.step()
    assert state.phase == "finished" and store.load(state.id).phase == "finished"
    assert state.waves[1].devices["lab-1"].previous_model == "m-v6.gguf"  # for the rollback command
    assert any("finished" in line for line in state.history)


def test_a_failing_canary_aborts_before_the_second_wave_and_withdraws(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, store = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)]))
    rollout.step()
    report(fleet, "canary-1", "rolled_back", reason="load")
    state = rollout.step()
    assert state.phase == "aborted" and "wave 1 (canary)" in (state.reason or "") and "error threshold" in state.reason
    assert broker.published == [("edged/fleet/default/group/canary/offer", ENVELOPE),
                                ("edged/fleet/default/group/canary/offer", b"")]  # lab never touched
    assert store.load(state.id).phase == "aborted"
    assert rollout.step() == state  # nothing happens after an abort


def test_an_error_threshold_tolerates_some_failures(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, _ = make(tmp_path, fleet, new_state([("lab", 100)], success=75, error=25))
    rollout.step()
    report(fleet, "lab-1", "failed", reason="transfer")
    for i in (2, 3):
        report(fleet, f"lab-{i}", "active", active=7)
    assert rollout.step().phase == "running"  # 1 of 4 failed = 25 %, not above; 2 of 4 active < 75 %
    report(fleet, "lab-4", "active", active=7)
    assert rollout.step().phase == "finished"


def test_percent_waves_use_device_topics_and_add_up(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, _ = make(tmp_path, fleet, new_state([("lab", 25), ("lab", 50), ("lab", 100)], success=100))
    state = rollout.step()
    first = list(state.waves[0].devices)
    assert len(first) == 1 and broker.topics() == [f"edged/{first[0]}/update/offer"]
    report(fleet, first[0], "active", active=7)
    state = rollout.step()
    second = list(state.waves[1].devices)
    assert len(second) == 1 and not set(second) & set(first)  # up to half of 4 = 2, one already done
    report(fleet, second[0], "active", active=7)
    state = rollout.step()
    assert set(state.waves[2].devices) == {f"lab-{i}" for i in range(1, 5)} - set(first) - set(second)
    assert broker.topics()[-1] == "edged/fleet/default/group/lab/offer"


def test_offline_devices_are_pending_until_the_timeout(tmp_path: Path, fleet: FleetRoster) -> None:
    clock = Clock()
    status(fleet, "lab-4", ["lab"], state="offline")
    rollout, broker, _ = make(tmp_path, fleet, new_state([("lab", 100)], timeout=60), clock)
    state = rollout.step()
    assert state.waves[0].devices["lab-4"].presence_at_start == "offline"
    for i in (1, 2, 3):
        report(fleet, f"lab-{i}", "active", active=7)
    clock.ms += 59_000
    state = rollout.step()
    assert state.phase == "running" and state.waves[0].counts()["offline"] == 1
    clock.ms += 2_000
    state = rollout.step()
    assert state.phase == "aborted" and "timed out" in (state.reason or "") and "1 offline" in state.reason
    assert broker.topics(b"") == ["edged/fleet/default/group/lab/offer"]


def test_deferred_devices_are_pending_and_counted_apart(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, _, _ = make(tmp_path, fleet, new_state([("lab", 100)]))
    rollout.step()
    report(fleet, "lab-1", "deferred", reason="install_window")
    counts = rollout.step().waves[0].counts()
    assert counts["deferred"] == 1 and counts["failed"] == 0


def test_a_device_that_appears_later_joins_its_group_wave(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, _, _ = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)]))
    rollout.step()
    status(fleet, "canary-2", ["canary"])
    state = rollout.step()
    assert set(state.waves[0].devices) == {"canary-1", "canary-2"}


def test_an_empty_group_aborts_instead_of_offering_to_nobody(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, _ = make(tmp_path, fleet, new_state([("kanary", 100), ("lab", 100)]))
    state = rollout.step()
    assert state.phase == "aborted" and "no device of group kanary" in (state.reason or "")
    assert broker.published == []
    status(fleet, "other-fleet-1", ["lab"], fleet="other")
    assert "other-fleet-1" not in fleet.members("default", "lab")


def test_a_restarted_rollout_carries_on_and_offers_the_running_wave_again(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, store = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)]))
    rollout.step()
    report(fleet, "canary-1", "active", active=7)
    rollout.step()  # the lab wave starts
    again = Broker()
    restarted = Rollout(store, store.load("default-stable-7"), ENVELOPE, fleet, again)
    restarted.republish_running()
    assert again.published == [("edged/fleet/default/group/lab/offer", ENVELOPE)]
    for i in range(1, 5):
        report(fleet, f"lab-{i}", "active", active=7)
    assert restarted.step().phase == "finished"
    assert again.topics() == ["edged/fleet/default/group/lab/offer"]  # the canary wave was not offered again


def test_pause_stops_the_wave_clock_and_resume_carries_on(tmp_path: Path, fleet: FleetRoster) -> None:
    clock = Clock()
    rollout, broker, store = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)], timeout=60), clock)
    rollout.step()
    state = rollout.pause("ops@host")
    assert state.phase == "paused" and store.load(state.id).phase == "paused"
    report(fleet, "canary-1", "active", active=7)
    assert rollout.step().phase == "paused" and len(broker.published) == 1  # no next wave while paused
    clock.ms += 3_600_000
    state = rollout.resume()
    assert state.phase == "running"
    assert rollout.step().current_wave() == 1  # not timed out: paused time does not count


def test_abort_by_the_operator_withdraws_every_offer_and_lists_committed(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, _ = make(tmp_path, fleet, new_state([("lab", 50), ("lab", 100)], success=50))
    state = rollout.step()
    chosen = sorted(state.waves[0].devices)
    report(fleet, chosen[0], "active", active=7)
    state = rollout.step()
    assert state.current_wave() == 1
    state = rollout.abort("aborted by ops@host")
    withdrawn = broker.topics(b"")
    assert sorted(withdrawn) == sorted([f"edged/{d}/update/offer" for d in chosen]
                                       + ["edged/fleet/default/group/lab/offer"])
    assert set(state.committed()) == {chosen[0]}


def test_summary_has_counts_and_no_device_list(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, broker, _ = make(tmp_path, fleet, new_state([("canary", 100), ("lab", 100)]))
    rollout.step()
    rollout.publish_summary()
    rollout.publish_summary()  # unchanged: not sent again
    summaries = [json.loads(p) for t, p in broker.published if t == "edged/fleet/default/rollout/default-stable-7"]
    assert len(summaries) == 1
    assert summaries[0]["phase"] == "running" and summaries[0]["wave"] == 1
    assert summaries[0]["waves"][0]["total"] == 1 and "devices" not in summaries[0]


def test_the_roster_ignores_junk_and_is_bounded(fleet: FleetRoster) -> None:
    for topic, payload in (("edged/x/status", b"\xff"), ("edged/x/status", b"[1]"), ("edged/x/update/state", b"{"),
                           ("edged/x/update/state", b'{"device_id":"x","state":"hacked"}'),
                           ("edged/x/status", b"{" * 100_000), ("edged/x/status", b"[" * 10_000),
                           ("edged/x/status", b'{"state": ' + b"7" * 5000 + b"}")):
        assert not fleet.apply(InboundMessage(topic=topic, payload=payload, qos=1))
    assert fleet.ignored == 7 and "x" not in fleet.devices
    assert not fleet.apply(InboundMessage(topic="edged/x/status", payload=b"", qos=1))  # cleared retained
    weird = json.dumps({"state": "online", "updates": {"fleet": 5, "groups": ["a", 7, "b" * 500]}}).encode()
    assert fleet.apply(InboundMessage(topic="edged/y/status", payload=weird, qos=1))
    assert fleet.devices["y"].fleet is None and fleet.devices["y"].groups == frozenset({"a", "b" * 64})


def test_a_wave_that_cannot_reach_the_success_threshold_aborts_at_once(tmp_path: Path, fleet: FleetRoster) -> None:
    rollout, _, _ = make(tmp_path, fleet, new_state([("lab", 100)], success=100, error=50))
    rollout.step()
    report(fleet, "lab-1", "rolled_back", reason="timeout")
    state = rollout.step()
    assert state.phase == "aborted" and "cannot be met" in (state.reason or "")


def test_hostile_device_ids_and_words_never_reach_the_terminal(tmp_path: Path, fleet: FleetRoster) -> None:
    for device in ("\x1b[2Jevil", "a b", "x" * 129):
        assert not fleet.apply(InboundMessage(topic=f"edged/{device}/status", qos=1,
                                              payload=b'{"state":"online","updates":{"fleet":"default","groups":["lab"]}}'))
    assert fleet.members("default", "lab") == ["lab-1", "lab-2", "lab-3", "lab-4"]
    rollout, _, _ = make(tmp_path, fleet, new_state([("lab", 100)]))
    rollout.step()
    report(fleet, "lab-1", "failed", reason="\x1b[31mred")
    state = rollout.step()
    assert "\x1b" not in state.waves[0].devices["lab-1"].label and state.phase == "aborted"
