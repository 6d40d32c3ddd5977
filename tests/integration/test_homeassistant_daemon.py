"""The daemon (in-process) with [homeassistant] through a real mosquitto: a subscriber on homeassistant/# checks every
config message against Home Assistant's documented discovery fields and renders each template against the
values on its state topic (issue 14)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from edged.homeassistant.entities import AVAILABILITY_TEMPLATE, ENTITIES
from tests.ha_schema import check_config, is_number_or_none, render
from tests.mosquitto import mosquitto_plain  # noqa: F401
from tests.mqtt_probe import Probe

from tests.integration.test_mqtt_daemon import settings

pytestmark = pytest.mark.slow
DEVICE = "device-1"
STATE = f"edged/{DEVICE}/ha/state"
UPDATE = f"edged/{DEVICE}/ha/update"
STATUS = f"edged/{DEVICE}/status"
HA_ON = {"EDGED_HOMEASSISTANT__ENABLED": "true"}


def daemon_env(broker, **extra):
    return {"EDGED_MQTT__URL": broker.url, "EDGED_MQTT__BACKOFF_MIN_S": "0.1", "EDGED_MQTT__BACKOFF_MAX_S": "0.5",
            **extra}


def configs(probe: Probe) -> dict[str, dict]:
    """The latest non-empty config per discovery topic seen so far."""
    latest: dict[str, dict] = {}
    for message in probe.drain():
        if message.topic.startswith("homeassistant/") and message.topic.endswith("/config"):
            if message.payload:
                latest[message.topic] = json.loads(message.payload)
            else:
                latest.pop(message.topic, None)
    return latest


def latest(probe: Probe, topic: str) -> bytes:
    return [m.payload for m in probe.drain() if m.topic == topic][-1]


def test_discovery_configs_templates_birth_and_forget(make_inprocess_daemon, mosquitto_plain):
    broker = mosquitto_plain
    d = make_inprocess_daemon("--device-id", DEVICE, env=daemon_env(broker, **HA_ON))
    with Probe(settings(broker), "homeassistant/#", f"edged/{DEVICE}/#") as probe:
        d.start()
        probe.wait_for(lambda m: len(configs(probe)) == len(ENTITIES), "every discovery config")
        announced = configs(probe)
        problems = [p for topic, config in announced.items() for p in check_config(topic, config)]
        assert problems == []
        assert {c["device"]["identifiers"][0] for c in announced.values()} == {DEVICE}
        assert {c["origin"]["name"] for c in announced.values()} == {"edged"}
        with Probe(settings(broker), "homeassistant/#", client_id="late") as late:  # Home Assistant starting later
            late.wait_for(lambda m: len({x.topic for x in late.seen if x.retain and x.payload}) == len(ENTITIES),
                          "the configs, retained")

        values_before = len([m for m in probe.drain() if m.topic == STATE])
        with d.client() as client:
            streamed = list(client.ask({"messages": [{"role": "user", "content": "Count from one to twenty."}],
                                        "max_tokens": 8, "stream": True}))
        probe.wait_for(lambda m: m.topic == STATE and json.loads(m.payload)["requests_served"] >= 1, "values")
        tokens = streamed[-1]["usage"]["completion_tokens"]
        # One value message per finished request (one more if a telemetry period ends meanwhile), never per token.
        assert len([m for m in probe.drain() if m.topic == STATE]) - values_before <= 2 < tokens
        state = latest(probe, STATE)
        values = json.loads(state)
        assert values["decode_tps"] > 0 and values["ttft_ms"] > 0 and values["profile"]
        for topic, config in announced.items():
            assert config["state_topic"] in (STATE, UPDATE), topic
            if "/update/" in topic:
                update = json.loads(latest(probe, UPDATE))
                assert update["installed_version"] == update["latest_version"] and update["in_progress"] is False
                continue
            shown = render(config["value_template"], latest(probe, config["state_topic"]))
            if "/binary_sensor/" in topic:
                assert shown in ("ON", "OFF", "None"), (topic, shown)
            elif "state_class" in config:
                assert is_number_or_none(shown), (topic, shown)
            else:
                assert shown == values["profile"], topic
            for entry in config["availability"]:
                assert render(entry["value_template"], latest(probe, entry["topic"])) == "online"

        before = len([m for m in probe.drain() if m.topic.endswith("/config") and m.payload])
        probe.link.publish("homeassistant/status", b"online", qos=1)  # Home Assistant restarted
        probe.wait_for(lambda m: len([x for x in probe.seen if x.topic.endswith("/config") and x.payload])
                       >= before + len(ENTITIES), "configs again after Home Assistant's birth", timeout=60)

        assert d.stop(signal.SIGTERM) == 0
        probe.wait_for(lambda m: m.topic == STATUS and json.loads(m.payload)["state"] == "stopped", "stopped")
        assert render(AVAILABILITY_TEMPLATE, latest(probe, STATUS)) == "offline"

        env = {**os.environ, "EDGED_STATE_DIR": str(d.state_dir)}
        done = subprocess.run([sys.executable, "-m", "edged", "ha", "forget", "--mqtt", broker.url,
                               "--device-id", DEVICE], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "removed the Home Assistant entities of device-1" in done.stdout
        # A zero-length retained publish deletes the retained message; the live copy shows the broker took it.
        probe.wait_for(lambda m: not configs(probe), "an empty config for every entity")
        emptied = {m.topic for m in probe.drain() if m.payload == b""}
        assert set(announced) | {STATE, UPDATE} <= emptied
        assert not (d.state_dir / "homeassistant-discovery.json").exists()


def test_profile_select_when_allowed_then_switching_the_section_off_removes_everything(make_inprocess_daemon,
                                                                                       mosquitto_plain):
    broker = mosquitto_plain
    on = make_inprocess_daemon("--device-id", DEVICE, env=daemon_env(broker, **HA_ON,
                                                          EDGED_HOMEASSISTANT__ALLOW_PROFILE_SELECT="true"))
    select_topic = f"homeassistant/select/edged_{DEVICE}/profile_select/config"
    with Probe(settings(broker), "homeassistant/#", f"edged/{DEVICE}/ha/#") as probe:
        on.start()
        probe.wait_for(lambda m: len(configs(probe)) == len(ENTITIES) + 1, "every discovery config and the select")
        announced = configs(probe)
        assert check_config(select_topic, announced[select_topic]) == []
        options = announced[select_topic]["options"]
        assert options[0] == "auto" and "eco" in options
        command = announced[select_topic]["command_topic"]
        probe.link.publish(command, b"turbo-mode", qos=1)  # not an option: refused, nothing changes
        probe.link.publish(command, b"eco", qos=1)
        probe.wait_for(lambda m: m.topic == STATE and json.loads(m.payload)["profile_choice"] == "eco",
                       "the select showing the override")
        assert on.status()["profile_overrides"] == {"remote": "eco"}
        on.wait_for_log(lambda line: line.get("event") == "home assistant profile command refused")
        assert on.stop(signal.SIGTERM) == 0

        off = make_inprocess_daemon("--state-dir", str(on.state_dir), "--device-id", DEVICE, env=daemon_env(broker))
        off.start()
        probe.wait_for(lambda m: not configs(probe), "empty retained configs for every entity")
        assert set(announced) <= {m.topic for m in probe.seen if not m.payload}
        off.wait_for_log(lambda line: line.get("event") == "home assistant entities removed")
        assert not (on.state_dir / "homeassistant-discovery.json").exists()
        assert off.stop(signal.SIGTERM) == 0
