"""Home Assistant feature: values once per telemetry period without requests; the announced-entities file is
believed only for this device's own config topics (it decides which retained topics are emptied)."""

import asyncio
import json
from pathlib import Path

import pytest

from edged.config import HomeAssistantConfig
from edged.homeassistant import feature as feature_module
from edged.homeassistant.entities import ENTITIES, HaTopics
from edged.homeassistant.feature import MARKER, MAX_MARKER_BYTES, HomeAssistant, read_marker
from edged.topics import DeviceTopics
from tests.unit.test_homeassistant import TOPICS, FakeLink, facts

NODE = TOPICS.node  # edged_pi_kitchen-1
OWN = [f"homeassistant/sensor/{NODE}/power/config", f"old/prefix/binary_sensor/{NODE}/throttled/config"]


def test_values_go_out_once_per_period_without_any_request(tmp_path):
    async def main():
        link = FakeLink()
        ha = HomeAssistant(HomeAssistantConfig(enabled=True), TOPICS, facts(), tmp_path, 0.01, False)
        await ha.start(link)
        for _ in range(1000):  # bounded: three periods pass with no request at all
            if len([t for t, _, _ in link.published if t == TOPICS.state]) >= 3:
                break
            await asyncio.sleep(0.01)
        await ha.stop()
        return [p for t, p, r in link.published if t == TOPICS.state and r]

    values = asyncio.run(main())
    assert len(values) >= 3 and json.loads(values[-1])["requests_served"] == 17


def write_marker(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MARKER).write_bytes(content)


def test_own_topics_under_any_prefix_are_read_back(tmp_path):
    write_marker(tmp_path, json.dumps({"topics": OWN}).encode())
    assert read_marker(tmp_path, NODE) == OWN


@pytest.mark.parametrize("content", [
    b"", b"{not json", b'{"topics": ["homeassistant/sensor/', b'["a"]', b'{"topics": "x/sensor/n/o/config"}',
    b'{"other": []}', b"\xff\xfe", b"[" * 20_000 + b"]" * 20_000, b'"' + b"x" * (MAX_MARKER_BYTES + 10) + b'"',
    b'{"topics": 7}'], ids=["empty", "malformed", "truncated", "not-an-object", "not-a-list", "no-topics",
                           "not-utf8", "deeply-nested", "oversized", "a-number"])
def test_a_damaged_file_means_nothing_announced(tmp_path, content):
    write_marker(tmp_path, content)
    assert read_marker(tmp_path, NODE) == []


def test_planted_topics_of_others_are_never_emptied(tmp_path):
    hostile = ["homeassistant/sensor/edged_other-device/power/config",  # another device's entity
               "homeassistant/sensor/+/power/config", "homeassistant/#", "#/config",  # wildcards
               "edged/pi.kitchen-1/status", "edged/pi.kitchen-1/ha/state",  # retained, but not a config
               f"homeassistant/light/{NODE}/lamp/config",  # a component edged never announces
               f"/homeassistant/sensor/{NODE}/power/config", f"homeassistant/sensor/{NODE}/po wer/config",
               f"homeassistant/sensor/{NODE}/power/config/x", 42, None, {"topic": OWN[0]}]
    write_marker(tmp_path, json.dumps({"topics": [*hostile, *OWN]}).encode())
    assert read_marker(tmp_path, NODE) == OWN


def test_switched_off_with_a_planted_file_removes_only_its_own_entities(tmp_path, monkeypatch):
    monkeypatch.setattr(feature_module, "ANNOUNCE_GAP_S", 0.0)
    planted = ["homeassistant/sensor/edged_other-device/power/config", "edged/other/status", *OWN]
    write_marker(tmp_path, json.dumps({"topics": planted}).encode())

    async def main():
        link = FakeLink()
        ha = HomeAssistant(HomeAssistantConfig(enabled=False), TOPICS, facts(), tmp_path, 3600.0, False)
        await ha.start(link)
        ha.on_connect()
        for _ in range(1000):
            if not HomeAssistant.announced(tmp_path):
                break
            await asyncio.sleep(0.01)
        await ha.stop()
        return {t for t, p, r in link.published if p == b"" and r}

    assert asyncio.run(main()) == {*OWN, TOPICS.state, TOPICS.update}


def test_a_changed_prefix_still_reads_the_old_prefixs_topics(tmp_path):
    """The replay that is meant: the file from the last run, under the old prefix, is what gets removed."""
    old = HaTopics(DeviceTopics("edged", "pi.kitchen-1"), "old/prefix")
    write_marker(tmp_path, json.dumps({"topics": [old.config(e) for e in ENTITIES]}).encode())
    assert read_marker(tmp_path, NODE) == [old.config(e) for e in ENTITIES]
