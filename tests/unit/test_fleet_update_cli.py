"""`edged fleet depot|push|status` options and helpers, and the [updates] config section."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest

from edged.cli import build_parser
from edged.commands.fleet_ops import _parse_states
from edged.config import load_config
from edged.errors import ConfigError
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import Artifact, ReleaseManifest
from edged.fleet.messages import ActiveModel, ReleaseRef, UpdateStateReport
from edged.fleet.depot.operator import UpdateBoard, offer_topic, read_manifest
from edged.fleet.trust import utc_now
from edged.mqtt.inbound import InboundMessage

MANIFEST = ReleaseManifest(fleet="acme", channel="stable", version=3, expires=utc_now() + timedelta(days=1),
                           artifacts=[Artifact(name="m.gguf", size=10, sha256="ab" * 32, format="gguf")],
                           chunk_size=65536)


@pytest.mark.parametrize("command", ["depot", "push", "status"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fleet", command, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"edged fleet {command} --mqtt" in out and "--password-file" in out


def test_push_needs_exactly_one_target():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["fleet", "push", "--mqtt", "mqtt://b", "--device", "a", "--group", "g", "m.json"])
    with pytest.raises(SystemExit):
        parser.parse_args(["fleet", "push", "--mqtt", "mqtt://b", "m.json"])


def test_offer_topics():
    assert offer_topic("edged", MANIFEST, device="pi-1") == "edged/pi-1/update/offer"
    assert offer_topic("edged", MANIFEST, group="lab") == "edged/fleet/acme/group/lab/offer"
    assert offer_topic("edged", MANIFEST, channel="stable") == "edged/fleet/acme/channel/stable/offer"
    with pytest.raises(ConfigError, match="channel 'stable'"):
        offer_topic("edged", MANIFEST, channel="beta")


def test_push_checks_signatures_against_the_key_dir_when_given(tmp_path):
    def keys(name: str) -> OperatorKeys:
        return OperatorKeys.create(tmp_path / name, root_keys=1, root_threshold=1, release_keys=1,
                                   release_threshold=1, expires=utc_now() + timedelta(days=30))

    ours, theirs = keys("ours"), keys("theirs")
    data = b"GGUF model"
    manifest = MANIFEST.model_copy(update={"artifacts": [Artifact(
        name="m.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest(), format="gguf")]})
    path = tmp_path / "theirs.json"
    path.write_bytes(theirs.sign_release(manifest))
    envelope, parsed = read_manifest(path)
    assert parsed.version == 3 and envelope == path.read_bytes()
    with pytest.raises(ConfigError, match="signature"):
        read_manifest(path, ours.directory)
    assert read_manifest(path, theirs.directory)[1] == parsed


def _state(device: str, state: str, **extra) -> InboundMessage:
    report = UpdateStateReport(device_id=device, state=state, **extra)
    return InboundMessage(topic=f"edged/{device}/update/state", payload=report.encode(), qos=1, retain=True)


def test_update_board_folds_states_and_presence():
    board = UpdateBoard("edged")
    board.apply(_state("pi-1", "downloading", progress_pct=50.0, release=ReleaseRef(channel="stable", version=3)))
    board.apply(InboundMessage(topic="edged/pi-1/status", payload=b'{"state": "online"}', qos=1))
    board.apply(_state("pi-2", "active", active=ActiveModel(slot="slot-b", model="m.gguf")))
    board.apply(InboundMessage(topic="edged/pi-3/update/state", payload=b"garbage", qos=1))
    assert set(board.devices) == {"pi-1", "pi-2"}
    table = board.render()
    assert "downloading (50%)" in table and "stable v3" in table and "slot-b: m.gguf" in table and "online" in table
    assert not board.all_in({"active"})
    board.apply(_state("pi-1", "active"))
    assert board.all_in({"active"})


@pytest.mark.parametrize("payload", [b"[" * 10_000, b'{"state": ' + b"7" * 5000 + b"}", b"\xff", b"[1]"],
                         ids=["deep", "5000-digits", "not-utf8", "not-an-object"])
def test_update_board_ignores_a_hostile_status(payload: bytes):
    """Anyone may publish a device's status: `edged fleet status --watch` must not end with a traceback."""
    board = UpdateBoard("edged")
    assert board.apply(InboundMessage(topic="edged/pi-1/status", payload=payload, qos=1)) is None
    assert not board.devices


def test_update_board_for_named_devices_waits_for_all_of_them():
    board = UpdateBoard("edged", {"pi-1", "pi-9"})
    board.apply(_state("pi-1", "active"))
    board.apply(_state("pi-2", "active"))
    assert set(board.devices) == {"pi-1"} and not board.all_in({"active"})


def test_until_states_are_checked():
    assert _parse_states("active,rolled_back") == {"active", "rolled_back"}
    with pytest.raises(ConfigError, match="unknown"):
        _parse_states("done")


def test_updates_section_from_toml_and_environment(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text('[updates]\nfleet = "acme"\nchannels = ["stable"]\nclock_policy = "trust_local"\n')
    config = load_config(path, environ={"EDGED_UPDATES__GROUPS": '["lab"]'})
    assert config.updates is not None and config.updates.groups == ["lab"]
    identity = config.updates.membership("pi-1")
    assert identity.fleet == "acme" and identity.groups == frozenset({"lab"})
    assert load_config(None, environ={}).updates is None


@pytest.mark.parametrize("bad", ['clock_policy = "sometimes"', "window_bytes = 65536\nrequest_bytes = 131072",
                                 "surprise = 1", 'channels = ["no/slash"]'])
def test_updates_section_is_strict(tmp_path, bad):
    path = tmp_path / "edged.toml"
    path.write_text(f"[updates]\n{bad}\n")
    with pytest.raises(ConfigError):
        load_config(path, environ={})


def test_until_with_a_version_ignores_devices_still_on_the_previous_release():
    board = UpdateBoard("edged")
    board.apply(_state("pi-1", "active", release=ReleaseRef(channel="stable", version=6)))
    assert board.all_in({"active"}) and not board.all_in({"active"}, version=7)
    board.apply(_state("pi-1", "active", release=ReleaseRef(channel="stable", version=7)))
    assert board.all_in({"active"}, version=7)
