"""Group membership in every retained status (birth, will, stopped), and the rollout part of `fleet watch`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edged.commands.fleet_watch import render_rollouts
from edged.fleet.depot.rollout_roster import FleetRoster
from edged.mqtt.inbound import InboundMessage
from edged.topics import DeviceTopics
from edged.transports.mqtt_presence import Presence

READINESS = {"enabled": True, "clock_policy": "reject", "clock_synchronised": True, "blocked_by_clock": False,
             "fleet": "cars", "groups": ["canary", "north"]}


class Control:
    def describe(self) -> dict[str, Any]:
        return {}

    def prekey_record(self) -> bytes:
        return b"{}"


def test_the_will_and_stopped_carry_the_groups_so_an_offline_device_is_still_counted(tmp_path: Path) -> None:
    presence = Presence(DeviceTopics("edged", "car-7"), tmp_path, Control(), updates=lambda: dict(READINESS))  # type: ignore[arg-type]
    will = json.loads(presence.next_will().payload)
    stopped = json.loads(presence.stopped_message().payload)
    for status in (will, stopped):
        assert status["updates"] == {"enabled": True, "fleet": "cars", "groups": ["canary", "north"]}
    assert will["state"] == "offline" and stopped["state"] == "stopped"
    roster = FleetRoster("edged")
    assert roster.apply(InboundMessage(topic="edged/car-7/status", payload=presence.next_will().payload, qos=1))
    assert roster.members("cars", "north") == ["car-7"] and roster.view("car-7").presence == "offline"
    plain = Presence(DeviceTopics("edged", "pi-1"), tmp_path / "p", Control())  # type: ignore[arg-type]
    (tmp_path / "p").mkdir()
    assert "updates" not in json.loads(plain.next_will().payload)


def test_watch_shows_running_rollouts_in_full_and_ended_ones_in_a_line() -> None:
    now = time.time()
    running = {"id": "default-stable-8", "phase": "running", "wave": 2,
               "waves": [{"wave": "canary", "phase": "done", "total": 1, "succeeded": 1, "failed": 0},
                         {"wave": "lab:50", "phase": "running", "total": 4, "succeeded": 1, "deferred": 2}],
               "updated_unix_ms": int(now * 1000)}
    ended = {"id": "default-stable-7", "phase": "aborted", "reason": "wave 1 (canary): 1 of 1 devices failed",
             "updated_unix_ms": int(now * 1000)}
    old = {"id": "default-stable-6", "phase": "finished", "updated_unix_ms": int((now - 7200) * 1000)}
    text = render_rollouts({"a": running, "b": ended, "c": old}, now)
    assert "rollout default-stable-8: running, wave 2 of 2" in text and "lab:50" in text
    assert "rollout default-stable-7: aborted (wave 1 (canary)" in text and "default-stable-6" not in text
    hostile = {"id": "x" * 1000, "phase": "running", "waves": 5, "wave": "y"}
    assert "x" * 81 not in render_rollouts({"h": hostile}, now)
