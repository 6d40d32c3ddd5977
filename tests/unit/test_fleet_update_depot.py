"""Depot side: wire formats, the release catalogue, serving pull requests, the fault injector hook."""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edged.errors import ConfigError, UpdateError
from edged.fleet.depot.catalog import ReleaseCatalog
from edged.fleet.depot.depot import Depot
from edged.testing.depot_faults import FaultInjector, FaultPlan, plan_from_env
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import Artifact, ReleaseManifest
from edged.fleet.messages import (
    HEADER_BYTES,
    KIND_ERROR,
    PullRequest,
    UpdateStateReport,
    encode_chunk,
    encode_error,
    parse_chunk,
    parse_pull,
)
from edged.topics import (
    channel_offer_topic,
    depot_pull_filter,
    device_of_pull_topic,
    device_of_state_topic,
    group_offer_topic,
)
from edged.fleet.trust import utc_now
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.publishing import PublishHandle
from edged.mqtt.settings import MqttSettings

CHUNK = 16 * 1024


# ---- wire formats ----------------------------------------------------------------------------


def test_chunk_frame_round_trip_and_integrity():
    data = os.urandom(CHUNK)
    frame = parse_chunk(encode_chunk("stable", 7, "m.gguf", 3, data))
    assert (frame.header.channel, frame.header.version, frame.header.artifact, frame.header.index) == (
        "stable", 7, "m.gguf", 3)
    assert bytes(frame.data) == data and frame.data_is_intact()
    assert len(encode_chunk("stable", 7, "m.gguf", 3, data)) == HEADER_BYTES + len("stable") + len("m.gguf") + CHUNK


@pytest.mark.parametrize("mangle", [
    lambda f: f[:20],  # shorter than the header
    lambda f: b"XXXX" + f[4:],  # magic
    lambda f: f[:4] + b"\x09" + f[5:],  # frame version
    lambda f: f + b"tail",  # longer than the header says
    lambda f: f[:-1],  # shorter than the header says
])
def test_malformed_frames_are_refused(mangle):
    with pytest.raises(UpdateError) as raised:
        parse_chunk(mangle(encode_chunk("stable", 7, "m.gguf", 3, b"abc")))
    assert raised.value.reason == "malformed"


def test_flipped_data_byte_fails_the_chunk_hash():
    frame = bytearray(encode_chunk("stable", 7, "m.gguf", 0, b"hello world"))
    frame[-1] ^= 1
    assert not parse_chunk(bytes(frame)).data_is_intact()


def test_error_frame_carries_a_reason():
    frame = parse_chunk(encode_error("stable", 7, "m.gguf", 4, "no such release"))
    assert frame.header.kind == KIND_ERROR and frame.error_text() == "no such release"


@pytest.mark.parametrize("body", [
    {"channel": "stable", "version": 1, "artifact": "m", "first": 0, "count": 65},
    {"channel": "stable", "version": 0, "artifact": "m", "first": 0, "count": 1},
    {"channel": "stable", "version": 1, "artifact": "m", "first": -1, "count": 1},
    {"channel": "stable", "version": 1, "artifact": "m", "first": 0, "count": 1, "reply_to": "x"},
    {"channel": "stable", "version": "1", "artifact": "m", "first": 0, "count": 1},
])
def test_pull_requests_are_parsed_strictly(body):
    with pytest.raises(UpdateError):
        parse_pull(json.dumps(body).encode())


def test_pull_request_round_trip():
    pull = PullRequest(channel="stable", version=3, artifact="m.gguf", first=8, count=4)
    assert parse_pull(pull.encode()) == pull


def test_topic_names():
    assert depot_pull_filter("edged", "depot") == "$share/depot/edged/+/update/pull"
    assert depot_pull_filter("site/edged", None) == "site/edged/+/update/pull"
    assert device_of_pull_topic("edged", "edged/pi-1/update/pull") == "pi-1"
    assert device_of_pull_topic("edged", "edged/a/b/update/pull") is None
    assert device_of_pull_topic("edged", "other/pi-1/update/pull") is None
    assert device_of_state_topic("edged", "edged/pi-1/update/state") == "pi-1"
    assert channel_offer_topic("edged", "acme", "stable") == "edged/fleet/acme/channel/stable/offer"
    assert group_offer_topic("edged", "acme", "lab") == "edged/fleet/acme/group/lab/offer"


def test_state_labels():
    assert UpdateStateReport(device_id="d", state="downloading", progress_pct=42.4).label() == "downloading (42%)"
    assert UpdateStateReport(device_id="d", state="rejected", reason="signature").label() == "rejected (signature)"
    assert UpdateStateReport(device_id="d", state="active").label() == "active"


# ---- catalogue and depot ---------------------------------------------------------------------


def _keys(path: Path) -> OperatorKeys:
    return OperatorKeys.create(path, root_keys=1, root_threshold=1, release_keys=1, release_threshold=1,
                               expires=utc_now() + timedelta(days=30))


def _release(keys: OperatorKeys, data: bytes, version: int, name: str = "m.gguf") -> None:
    artifact = Artifact(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), format="gguf")
    keys.sign_release(ReleaseManifest(fleet="default", channel="stable", version=version,
                                      expires=utc_now() + timedelta(days=1), artifacts=[artifact], chunk_size=CHUNK))


@pytest.fixture
def shop(tmp_path: Path) -> tuple[OperatorKeys, Path, bytes]:
    keys = _keys(tmp_path / "keys")
    models = tmp_path / "models"
    models.mkdir()
    data = b"GGUF" + os.urandom(3 * CHUNK + 100)
    _release(keys, data, 1)
    return keys, models, data


def test_catalog_finds_the_released_bytes_by_name_or_by_hash(shop):
    keys, models, data = shop
    (models / "renamed.bin").write_bytes(data)
    (models / "m.gguf").write_bytes(b"GGUF" + os.urandom(len(data) - 4))  # right name and size, wrong bytes
    served = ReleaseCatalog(keys.directory, models).lookup("stable", 1, "m.gguf")
    assert served.path.name == "renamed.bin" and served.chunk_count == 4
    assert b"".join(served.read(i) for i in range(4)) == data


@pytest.mark.parametrize("channel, version, name", [("stable", 2, "m.gguf"), ("stable", 1, "other.gguf"),
                                                    ("beta", 1, "m.gguf")])
def test_catalog_refuses_what_is_not_signed_or_not_on_disk(shop, channel, version, name):
    keys, models, data = shop
    (models / "m.gguf").write_bytes(data)
    with pytest.raises(UpdateError) as raised:
        ReleaseCatalog(keys.directory, models).lookup(channel, version, name)
    assert raised.value.reason == "unavailable"


def test_catalog_refuses_a_release_signed_by_someone_else(shop, tmp_path):
    keys, models, data = shop
    (models / "m.gguf").write_bytes(data)
    foreign = _keys(tmp_path / "foreign")
    _release(foreign, data, 2)
    (keys.directory / "releases" / "stable-2.json").write_bytes(
        (foreign.directory / "releases" / "stable-2.json").read_bytes())
    with pytest.raises(UpdateError) as raised:
        ReleaseCatalog(keys.directory, models).lookup("stable", 2, "m.gguf")
    assert raised.value.reason == "signature"


def test_catalog_needs_a_key_directory(tmp_path):
    (tmp_path / "models").mkdir()
    with pytest.raises(ConfigError):
        ReleaseCatalog(tmp_path / "nokeys", tmp_path / "models")


class RecordingLink:
    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, **_: Any) -> PublishHandle:
        self.published.append((topic, payload))
        handle = PublishHandle(len(self.published), topic, qos)
        handle.complete(True)
        return handle


def _depot(shop: tuple[OperatorKeys, Path, bytes], faults: FaultInjector | None = None) -> tuple[Depot, RecordingLink]:
    keys, models, data = shop
    (models / "m.gguf").write_bytes(data)
    depot = Depot(MqttSettings(url="mqtt://127.0.0.1:1"), ReleaseCatalog(keys.directory, models), faults=faults)
    link = RecordingLink()
    depot.link = link  # type: ignore[assignment]
    return depot, link


def test_depot_answers_on_the_device_chunk_topic_and_clamps_to_the_last_chunk(shop):
    depot, link = _depot(shop)
    depot._serve("pi-1", PullRequest(channel="stable", version=1, artifact="m.gguf", first=2, count=10), deque())
    assert [t for t, _ in link.published] == ["edged/pi-1/update/chunks"] * 2
    frames = [parse_chunk(p) for _, p in link.published]
    assert [f.header.index for f in frames] == [2, 3] and all(f.data_is_intact() for f in frames)
    assert depot.snapshot()["chunks"] == 2


def test_depot_refuses_with_an_error_frame(shop):
    depot, link = _depot(shop)
    depot._serve("pi-1", PullRequest(channel="stable", version=9, artifact="m.gguf", first=0, count=1), deque())
    depot._serve("pi-1", PullRequest(channel="stable", version=1, artifact="m.gguf", first=99, count=1), deque())
    assert [parse_chunk(p).header.kind for _, p in link.published] == [KIND_ERROR, KIND_ERROR]
    assert depot.snapshot()["refused"] == 2


def test_depot_counts_bad_requests_without_answering(shop):
    depot, link = _depot(shop)
    depot._on_pull(InboundMessage(topic="edged/pi-1/update/pull", payload=b"{}", qos=1))
    depot._on_pull(InboundMessage(topic="edged/pi-1/x/update/pull", payload=PullRequest(
        channel="stable", version=1, artifact="m.gguf", first=0, count=1).encode(), qos=1))
    assert depot.snapshot()["bad"] == 2 and link.published == []


def test_fault_injector_is_deterministic_and_counts(shop):
    plan = FaultPlan(drop=0.2, dup=0.2, reorder=0.2, garble=0.2, truncate=0.1, stale=0.2, seed=11)
    runs = []
    for _ in range(2):
        injector = FaultInjector(plan)
        frames = [f for i in range(50) for f in injector.apply("stable", 2, "m.gguf", i, bytes([i]) * 64)]
        runs.append((frames + injector.flush(), dict(injector.counts)))
    assert runs[0] == runs[1]
    assert set(runs[0][1]) == {"drop", "dup", "reorder", "garble", "truncate", "stale"}


def test_fault_plan_comes_only_from_the_test_variable():
    assert plan_from_env({}) is None
    assert plan_from_env({"EDGED_TEST_DEPOT_FAULTS": "drop=0.5,seed=3"}) == FaultPlan(drop=0.5, seed=3)
    with pytest.raises(ConfigError):
        plan_from_env({"EDGED_TEST_DEPOT_FAULTS": "explode=1"})


def test_spoofed_pulls_cannot_send_a_device_more_than_its_budget(shop):
    """Pulls carry no signature: 100 of them for one device must not make the depot send it 100 pulls' worth."""
    from edged.fleet.depot.pull_budget import DeviceBudget

    now = [0.0]
    depot, link = _depot(shop)
    depot.budget = DeviceBudget(rate_bytes_s=CHUNK, burst_bytes=3 * CHUNK, clock=lambda: now[0])
    pull = PullRequest(channel="stable", version=1, artifact="m.gguf", first=0, count=4)
    for _ in range(100):
        depot._serve("pi-1", pull, deque())
    assert len(link.published) == 3  # the burst, then nothing
    assert depot.snapshot()["throttled"] == 4 * 100 - 3
    depot._serve("pi-2", pull, deque())  # another device has its own budget
    assert len(link.published) == 3 + 3
    now[0] = 2.0  # two seconds later: two more chunks' worth for pi-1
    depot._serve("pi-1", pull, deque())
    assert len(link.published) == 3 + 3 + 2
