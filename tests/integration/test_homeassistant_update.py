"""A signed model update seen from Home Assistant (issue 14): the `update` entity follows the device's own update
state through the real broker, and Wyoming's describe names the release serving. Real mosquitto, the real depot,
an `edged serve` subprocess."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from wyoming.client import AsyncClient
from wyoming.info import Describe, HandleModel, Info

from edged.fleet.depot.operator import push
from edged.mqtt.inbound import InboundMessage
from tests.integration.test_fleet_update import ask, device_env, model_path, provisioned, settings
from tests.integration.test_fleet_update import broker, depot, operator  # noqa: F401  (the module-scoped fixtures, shared)
from tests.mqtt_probe import Probe

pytestmark = pytest.mark.slow
DEVICE = "hass-1"


def described_model(socket_path: Path) -> HandleModel:
    async def main() -> Info:
        async with AsyncClient.from_uri(f"unix://{socket_path}") as client:
            await client.write_event(Describe().event())
            event = await client.read_event()
            assert event is not None
            return Info.from_event(event)

    (program,) = asyncio.run(asyncio.wait_for(main(), 60)).handle
    (model,) = program.models
    return model


def entity(message: InboundMessage) -> dict | None:
    return json.loads(message.payload) if message.payload else None


def installed(version: str):
    def check(message: InboundMessage) -> bool:
        shown = entity(message)
        return bool(shown and not shown["in_progress"] and shown["installed_version"] == version)
    return check


def test_the_update_entity_and_wyoming_follow_a_signed_install(make_daemon, tmp_path, broker, operator, depot,
                                                               demo_model):
    sock = tmp_path / "wyoming.sock"
    env = {**device_env(broker), "EDGED_HOMEASSISTANT__ENABLED": "true", "EDGED_WYOMING__URI": f"unix://{sock}"}
    daemon = provisioned(make_daemon, operator, DEVICE, env)
    with Probe(settings(broker), f"edged/{DEVICE}/ha/update") as probe:
        daemon.start()
        idle = entity(probe.wait_for(lambda m: bool(m.payload), "the update entity", watch=daemon))
        assert idle is not None and idle["installed_version"] == idle["latest_version"] and not idle["in_progress"]
        assert described_model(sock).version is None  # the configured model: no release, its file names none

        push(settings(broker), f"edged/{DEVICE}/update/offer", operator.sign("hass", 1))
        busy = entity(probe.wait_for(lambda m: bool((e := entity(m)) and e["in_progress"]), "an update in progress",
                                     timeout=120, watch=daemon))
        assert busy is not None and busy["latest_version"] == "hass v1" and busy["installed_version"] != "hass v1"
        done = entity(probe.wait_for(installed("hass v1"), "installed", timeout=120, watch=daemon))
        assert done is not None and done["installed_version"] == done["latest_version"] == "hass v1"
        shown = [e for e in map(entity, probe.seen) if e]
        before = shown[:next(i for i, e in enumerate(shown) if e["in_progress"])]
        assert {e["installed_version"] for e in before} == {idle["installed_version"]}  # one name, report or none
        print("update entity:", [(e["installed_version"], e["latest_version"], e["in_progress"],
                                  e["update_percentage"]) for e in map(entity, probe.seen) if e])
        assert done["release_summary"].startswith("hass v1: ")
    assert model_path(daemon) == str(daemon.state_dir / "models" / "slot-a" / "smollm2.gguf")
    assert ask(daemon).strip()
    assert described_model(sock).version == "hass v1"  # read again after the new model loaded
    assert daemon.stop() == 0
