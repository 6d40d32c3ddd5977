"""The device's install policy end to end (issue 18, items 3 and 5): real mosquitto, the real depot, real daemons.

The install window is driven by the one test clock seam (EDGED_TEST_INSTALL_CLOCK_FILE, read only through
edged/testing/): the test writes the local time the daemon sees and wakes the deferred install with SIGHUP,
so nothing depends on how fast a loaded machine downloads.
"""

from __future__ import annotations

import json
import signal

import pytest

from edged.fleet.depot.operator import push
from edged.fleet.messages import parse_state
from edged.testing import INSTALL_CLOCK_ENV
from tests.integration.test_fleet_update import (ask, device_env, model_path, provisioned, settings,
                                                 state_is)
from tests.integration.test_fleet_update import broker, depot, operator  # noqa: F401  (the module-scoped fixtures, shared)
from tests.mqtt_probe import Probe
from tests.profiles import profile_toml, profiles_dir

pytestmark = pytest.mark.slow
LONG = {"prompt": "Count from 1 to 2000: 1, 2, 3, 4,", "max_tokens": 1500, "stream": True, "temperature": 0.0,
        "deadline_ms": 600_000}


def events_named(daemon, name: str) -> list[dict]:
    return [line for line in daemon.log_lines() if line.get("event") == name]


def test_install_window_defers_across_a_restart_then_installs(make_daemon, tmp_path, broker, operator, depot,
                                                              demo_model):
    clock = tmp_path / "local-time"
    clock.write_text("2026-12-01T01:00:00")  # local, an hour before the window
    device = "window-1"
    envelope = operator.sign("window", 1)
    env = {**device_env(broker, install_window="02:00-05:00"), INSTALL_CLOCK_ENV: str(clock)}
    daemon = provisioned(make_daemon, operator, device, env)
    with Probe(settings(broker), f"edged/{device}/update/state") as probe:
        daemon.start()
        push(settings(broker), f"edged/{device}/update/offer", envelope)
        deferred = parse_state(probe.wait_for(state_is("deferred", 1, "install_window"), "deferred (install_window)",
                                              timeout=120, watch=daemon).payload)
        assert deferred.detail == "installs after 02:00 local time (window 02:00-05:00)"
        assert deferred.step == "downloaded" and deferred.active is not None and deferred.active.slot is None
        assert model_path(daemon) == str(demo_model) and ask(daemon).strip()  # the old model serves meanwhile
        journal = json.loads((daemon.state_dir / "update" / "journal.json").read_text())
        assert journal["update"]["step"] == "downloaded"

        assert daemon.stop() == 0  # the deferral is in the journal: a restart keeps waiting, downloads nothing
        daemon.log_path.rename(daemon.workdir / "edged.first-life.log")
        daemon.start()
        again = daemon.wait_for_log(lambda line: line.get("event") == "update deferred", timeout=60)
        assert again["reason"] == "install_window" and not events_named(daemon, "download opened")
        assert model_path(daemon) == str(demo_model)

        clock.write_text("2026-12-01T02:30:00")
        daemon.send_signal(signal.SIGHUP)  # a reload makes a deferred install look again at once
        probe.wait_for(state_is("active", 1), "active after the window opened", timeout=120, watch=daemon)
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    assert ask(daemon).strip()
    events = [line.get("event") for line in daemon.log_lines()]
    assert events.index("update install allowed") < events.index("health check passed")
    assert daemon.stop() == 0


def test_install_when_idle_waits_for_a_long_answer(make_daemon, tmp_path, broker, operator, depot, demo_model):
    profiles = profiles_dir(tmp_path, slow=profile_toml("slow", pace="max_tokens_per_s = 4.0"))
    device = "idle-1"
    envelope = operator.sign("idle", 1)
    env = {**device_env(broker, install_when="idle"), "EDGED_PROFILE__DIRECTORY": str(profiles)}
    daemon = provisioned(make_daemon, operator, device, env)
    daemon.args = ("--profile", "slow", *daemon.args)
    with Probe(settings(broker), f"edged/{device}/update/state") as probe:
        daemon.start()
        client = daemon.client(timeout=600)
        stream = client.ask(LONG)
        next(stream)  # the answer is streaming, four tokens a second
        push(settings(broker), f"edged/{device}/update/offer", envelope)
        deferred = parse_state(probe.wait_for(state_is("deferred", 1, "busy"), "deferred (busy)", timeout=120,
                                              watch=daemon).payload)
        assert deferred.detail == "installs when no request is in flight or queued"
        next(stream)  # still being answered, by the old model
        assert daemon.status()["queue"]["running"] == 1 and model_path(daemon) == str(demo_model)
        client.close()  # the client hangs up: the request ends, request_finished wakes the install
        probe.wait_for(state_is("active", 1), "active once idle", timeout=120, watch=daemon)
    lines = daemon.log_lines()
    ended = next(i for i, line in enumerate(lines) if line.get("event") == "request")
    assert lines[ended]["outcome"] == "cancelled" and lines[ended]["peer"] != "health-check"
    staged = next(i for i, line in enumerate(lines) if line.get("event") == "update step" and line.get("step") == "staged")
    assert ended < staged
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    assert ask(daemon).strip()
    assert daemon.stop() == 0


def test_install_when_parked_waits_for_the_parked_profile(make_daemon, broker, operator, depot, demo_model):
    """Downloaded while driving (balanced), installed once the parked profile is active (here pinned by hand,
    as `edged profile set parked` does; the governor picks it when the ignition goes off)."""
    device = "car-1"
    envelope = operator.sign("car", 1)
    daemon = provisioned(make_daemon, operator, device, device_env(broker, install_when="parked"))
    daemon.args = ("--profile", "balanced", *daemon.args)
    with Probe(settings(broker), f"edged/{device}/update/state") as probe:
        daemon.start()
        push(settings(broker), f"edged/{device}/update/offer", envelope)
        deferred = parse_state(probe.wait_for(state_is("deferred", 1, "not_parked"), "deferred (not_parked)",
                                              timeout=120, watch=daemon).payload)
        assert deferred.detail == "installs once parked (ignition off); profile now balanced"
        assert model_path(daemon) == str(demo_model)
        with daemon.client() as client:
            assert client.control("profile", set="parked")["profile"] == "parked"  # profile_changed wakes it
        probe.wait_for(state_is("active", 1), "active once parked", timeout=120, watch=daemon)
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    assert daemon.status()["profile"] == "parked"
    assert daemon.stop() == 0
