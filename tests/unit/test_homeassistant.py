"""Home Assistant discovery: configs against HA's documented fields, templates against the state, the feature's rules."""

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edged.config import HomeAssistantConfig
from edged.errors import BadRequest
from edged.fleet.messages import ActiveModel, ReleaseRef, UpdateStateReport
from edged.homeassistant import feature as feature_module
from edged.homeassistant.entities import (AVAILABILITY_TEMPLATE, ENTITIES, PROFILE_SELECT, HaTopics, config_payload,
                                          device_block)
from edged.homeassistant.feature import HomeAssistant
from edged.homeassistant.state import DeviceFacts, RequestWindow, device_state, update_state
from edged.summary import RequestSummary
from edged.mqtt.inbound import AsyncInbox, InboundMessage
from edged.mqtt.publishing import PublishHandle
from edged.state import PowerState
from edged.topics import DeviceTopics
from tests.ha_schema import check_config, is_number_or_none, render

TOPICS = HaTopics(DeviceTopics("edged", "pi.kitchen-1"), "homeassistant")
DEVICE = device_block("pi.kitchen-1", None)


def summary(outcome="ok", tps=20.0, ttft=150.0, energy=2.0, tokens=10) -> RequestSummary:
    return RequestSummary(request_id="r", transport="wyoming", peer="p", client=None, priority="interactive",
                          profile="balanced", outcome=outcome, finish_reason="stop", input_tokens=5,
                          output_tokens=tokens, queue_time_ms=1.0, time_to_first_token_ms=ttft, duration_ms=500.0,
                          decode_tokens_per_s=tps, energy_j=energy, energy_source="rapl", energy_scope="cpu_package")


def facts(power=None, **overrides) -> DeviceFacts:
    calls = overrides.pop("calls", [])

    def set_profile(name):
        if name not in ("auto", "eco", "balanced"):
            raise BadRequest(f"unknown profile {name!r}")
        calls.append(name)

    values = dict(power=lambda: power or PowerState(temperature_cel=51.234, throttled_flags=0x50005, power_w=3.21,
                                                    energy_j=7200.0, energy_source="rapl",
                                                    energy_scope="cpu_package"),
                  profile=lambda: "balanced", queue_depth=lambda: 2, served=lambda: 17, model_name=lambda: "smol",
                  profile_names=lambda: ["balanced", "eco"], profile_choice=lambda: "auto", set_profile=set_profile)
    return DeviceFacts(**{**values, **overrides})


def test_every_config_has_only_documented_fields_and_topics():
    for entity in (*ENTITIES, PROFILE_SELECT):
        payload = json.loads(config_payload(entity, TOPICS, DEVICE, ["balanced", "eco"]))
        assert check_config(TOPICS.config(entity), payload) == []
        assert payload["device"]["identifiers"] == ["pi.kitchen-1"] and payload["origin"]["name"] == "edged"
        assert TOPICS.config(entity).startswith("homeassistant/") and "/edged_pi_kitchen-1/" in TOPICS.config(entity)
    energy = json.loads(config_payload(next(e for e in ENTITIES if e.key == "energy"), TOPICS, DEVICE))
    assert (energy["device_class"], energy["state_class"], energy["unit_of_measurement"]) == (
        "energy", "total_increasing", "Wh")
    select = json.loads(config_payload(PROFILE_SELECT, TOPICS, DEVICE, ["balanced", "eco"]))
    assert select["options"] == ["auto", "balanced", "eco"] and select["command_topic"] == TOPICS.profile_command


def test_the_required_entities_are_all_there():
    keys = {entity.key for entity in ENTITIES}
    assert {"decode_speed", "decode_speed_median", "ttft", "ttft_median", "energy_per_token", "power", "energy",
            "cpu_temperature", "throttled", "under_voltage", "profile", "queue_depth", "requests_served",
            "model"} <= keys
    assert "profile_select" not in keys  # read-only unless allowed


@pytest.mark.parametrize("presence, shown", [
    ({"state": "online", "bdseq": 3}, "online"), ({"state": "offline"}, "offline"),
    ({"state": "stopped"}, "offline"), ({"other": 1}, "offline")])
def test_availability_maps_every_presence_state(presence, shown):
    assert render(AVAILABILITY_TEMPLATE, json.dumps(presence).encode()) == shown
    assert render(AVAILABILITY_TEMPLATE, b"not json") == "offline"


def test_every_template_renders_a_value_its_entity_accepts():
    window = RequestWindow()
    for item in (summary(tps=10.0, ttft=100.0), summary(tps=30.0, ttft=300.0), summary(tps=20.0, ttft=200.0)):
        window.add(item)
    window.add(summary(outcome="cancelled", tps=99.0))
    state = device_state(facts(), window)
    values = json.loads(state)
    assert values["decode_tps"] == 20.0 and values["decode_tps_median"] == 20.0 and values["ttft_ms_median"] == 200.0
    assert values["j_per_token"] == 0.2 and values["energy_wh"] == 2.0 and values["cpu_temp_c"] == 51.2
    assert values["throttled"] == "ON" and values["under_voltage"] == "ON"  # 0x50005: under-voltage, throttled
    empty = device_state(facts(power=PowerState()), RequestWindow())
    for payload in (state, empty):
        for entity in ENTITIES:
            if entity.component == "update":
                continue
            shown = render(entity.fields["value_template"], payload)
            if entity.component == "binary_sensor":
                assert shown in ("ON", "OFF", "None"), (entity.key, shown)
            elif "state_class" in entity.fields:
                assert is_number_or_none(shown), (entity.key, shown)
            else:
                assert shown == "balanced"
    attributes = json.loads(render(next(e for e in ENTITIES if e.key == "energy").fields["json_attributes_template"],
                                   state))
    assert attributes == {"source": "rapl", "scope": "cpu_package"}


def report(state, **fields):
    return UpdateStateReport(device_id="d", state=state, active=ActiveModel(slot="slot-a", model="m.gguf",
                             release=ReleaseRef(channel="stable", version=3)), **fields)


def test_update_entity_follows_the_signed_update_state():
    idle = json.loads(update_state(None, "smol"))
    assert idle["installed_version"] == idle["latest_version"] == "smol" and idle["in_progress"] is False
    configured = UpdateStateReport(device_id="d", state="idle", active=ActiveModel(slot=None, model="smol.Q4.gguf"))
    assert json.loads(update_state(configured, "smol")) == idle  # the first report names the model the same way
    downloading = json.loads(update_state(report("downloading", release=ReleaseRef(channel="stable", version=4),
                                                 progress_pct=42.25), "smol"))
    assert downloading["installed_version"] == "stable v3" and downloading["latest_version"] == "stable v4"
    assert downloading["in_progress"] is True and downloading["update_percentage"] == 42.2
    rejected = json.loads(update_state(report("rejected", release=ReleaseRef(channel="stable", version=5),
                                              reason="signature", detail="x" * 290), "smol"))
    assert rejected["latest_version"] == "stable v3" and not rejected["in_progress"]
    assert rejected["release_summary"].startswith("stable v5: rejected (signature)")
    assert len(rejected["release_summary"]) <= 255
    deferred = json.loads(update_state(report("deferred", release=ReleaseRef(channel="stable", version=4),
                                              reason="install_window",
                                              detail="installs after 02:00 local time (window 02:00-05:00)"), "smol"))
    assert deferred["installed_version"] == "stable v3" and deferred["latest_version"] == "stable v4"
    assert deferred["in_progress"] is False
    assert deferred["release_summary"] == ("stable v4: deferred (install_window); installs after 02:00 local time "
                                           "(window 02:00-05:00)")


class FakeLink:
    """Records publishes; subscriptions go to real AsyncInboxes (unit test only)."""

    def __init__(self) -> None:
        self.is_connected = True
        self.published: list[tuple[str, bytes, bool]] = []
        self.handlers: dict[str, AsyncInbox] = {}

    def inbox(self, loop, maxsize):
        return AsyncInbox(loop, maxsize)

    def subscribe(self, topic, qos, handler):
        self.handlers[topic] = handler

    def publish(self, topic, payload, qos=1, retain=False):
        self.published.append((topic, payload, retain))
        handle = PublishHandle(len(self.published), topic, qos)
        handle.complete(True)
        return handle

    def deliver(self, topic, payload: bytes):
        self.handlers[topic](InboundMessage(topic=topic, payload=payload, qos=1))


async def settle():
    for _ in range(20):
        await asyncio.sleep(0.01)


def make(tmp_path: Path, link: FakeLink, **settings) -> HomeAssistant:
    config = HomeAssistantConfig.model_validate({"enabled": True, **settings})
    ha = HomeAssistant(config, HaTopics(DeviceTopics("edged", "pi.kitchen-1"), config.discovery_prefix),
                       facts(), tmp_path, 3600.0, False)
    return ha


def test_announce_on_connect_and_on_home_assistant_birth(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_module, "ANNOUNCE_GAP_S", 0.0)

    async def main():
        link = FakeLink()
        ha = make(tmp_path, link)
        await ha.start(link)
        ha.on_connect()
        await settle()
        first = list(link.published)
        link.published.clear()
        link.deliver("homeassistant/status", b"offline")
        await settle()
        nothing = list(link.published)
        link.deliver("homeassistant/status", b"online")
        await settle()
        await ha.stop()
        return first, nothing, link.published

    first, nothing, second = asyncio.run(main())
    configs = {t: p for t, p, r in first if t.endswith("/config") and p and r}
    assert len(configs) == len(ENTITIES)
    assert ("homeassistant/select/edged_pi_kitchen-1/profile_select/config", b"", True) in first  # never announced
    assert any(t == TOPICS.state and r for t, _, r in first) and any(t == TOPICS.update for t, _, _ in first)
    assert nothing == [] and {t for t, p, _ in second if p and t.endswith("/config")} == set(configs)
    assert json.loads((tmp_path / "homeassistant-discovery.json").read_text())["topics"] == sorted(configs)


def test_values_after_each_request_not_per_token(tmp_path):
    async def main():
        link = FakeLink()
        ha = make(tmp_path, link)
        await ha.start(link)
        await settle()
        before = [t for t, _, _ in link.published if t == TOPICS.state]
        ha.on_request(summary())
        await settle()
        after = [p for t, p, _ in link.published if t == TOPICS.state]
        await ha.stop()
        return before, after

    before, after = asyncio.run(main())
    assert before == [] and len(after) == 1 and json.loads(after[0])["decode_tps"] == 20.0


def test_profile_select_only_when_allowed_and_only_listed_names(tmp_path):
    calls = []

    async def main(allow):
        link = FakeLink()
        config = HomeAssistantConfig(enabled=True, allow_profile_select=allow)
        ha = HomeAssistant(config, TOPICS, facts(calls=calls), tmp_path, 3600.0, False)
        await ha.start(link)
        subscribed = set(link.handlers)
        if allow:
            for payload in (b"eco", b"../../etc", b"x" * 100, b"turbo", b"auto"):
                link.deliver(TOPICS.profile_command, payload)
                await settle()
        await ha.stop()
        return subscribed, ha.refused_commands

    assert TOPICS.profile_command not in asyncio.run(main(False))[0]
    subscribed, refused = asyncio.run(main(True))
    assert TOPICS.profile_command in subscribed
    assert calls == ["eco", "auto"] and refused == 3


def test_switched_off_removes_what_was_announced_then_forgets(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_module, "ANNOUNCE_GAP_S", 0.0)

    async def main():
        link = FakeLink()
        ha = make(tmp_path, link, discovery_prefix="old")
        await ha.start(link)
        ha.on_connect()
        await settle()
        await ha.stop()
        announced = {t for t, p, _ in link.published if t.endswith("/config") and p}
        assert HomeAssistant.announced(tmp_path)
        off = FakeLink()
        ha = HomeAssistant(HomeAssistantConfig(enabled=False), TOPICS, facts(), tmp_path, 3600.0, False)
        await ha.start(off)
        ha.on_connect()
        await settle()
        await ha.stop()
        return announced, off.published

    announced, removal = asyncio.run(main())
    assert all(t.startswith("old/") for t in announced)
    assert {t for t, p, r in removal if p == b"" and r} == announced | {TOPICS.state, TOPICS.update}
    assert not HomeAssistant.announced(tmp_path)


def test_a_changed_prefix_removes_the_old_entities(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_module, "ANNOUNCE_GAP_S", 0.0)

    async def announce(prefix):
        link = FakeLink()
        ha = make(tmp_path, link, discovery_prefix=prefix)
        await ha.start(link)
        ha.on_connect()
        await settle()
        await ha.stop()
        return link.published

    asyncio.run(announce("old"))
    second = asyncio.run(announce("new"))
    removed = {t for t, p, _ in second if p == b""}
    assert len([t for t in removed if t.startswith("old/")]) == len(ENTITIES)


def test_the_update_entity_follows_the_devices_own_update_state(tmp_path):
    async def main():
        link = FakeLink()
        ha = HomeAssistant(HomeAssistantConfig(enabled=True), TOPICS, facts(), tmp_path, 3600.0, True)
        await ha.start(link)
        state_topic = TOPICS.device.update_state
        link.deliver(state_topic, report("downloading", release=ReleaseRef(channel="stable", version=4),
                                         progress_pct=10.0).encode())
        await settle()
        for _ in range(500):  # malformed reports change nothing and break nothing, and log one line
            link.deliver(state_topic, b"{not json")
        await settle()
        link.is_connected = False
        link.deliver(state_topic, report("active").encode())  # offline: nothing queued
        await settle()
        await ha.stop()
        return [json.loads(p) for t, p, _ in link.published if t == TOPICS.update]

    with capture_logs() as logs:
        updates = asyncio.run(main())
    assert len(updates) == 1
    assert updates[0]["in_progress"] and updates[0]["update_percentage"] == 10.0
    assert [entry["event"] for entry in logs].count("update state not shown in home assistant") == 1
    assert updates[0]["latest_version"] == "stable v4" and updates[0]["installed_version"] == "stable v3"
