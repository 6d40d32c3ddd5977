"""A/B slots, the journal, and resolve_active_model finishing or undoing a half-done update at start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.fleet.device.journal import STEPS, Journal, JournalState, SlotPointer, UpdateRecord, payload_sha256
from edged.fleet.manifest import Artifact
from edged.fleet.device.slots import Slots, resolve_active_model
from edged.fleet import dsse

MODEL = b"GGUF" + b"\x01" * 4092
ARTIFACT = Artifact(name="new.gguf", size=len(MODEL), sha256="ab" * 32, format="gguf")
OLD = SlotPointer(slot="slot-a", model="old.gguf", size=len(MODEL), sha256="cd" * 32, channel="stable", version=1)
NEW = SlotPointer(slot="slot-b", model="new.gguf", size=len(MODEL), sha256="ab" * 32, channel="stable", version=2)


def record(step: str, previous: SlotPointer | None = OLD) -> UpdateRecord:
    return UpdateRecord(channel="stable", version=2, payload_sha256="ef" * 32, artifact=ARTIFACT, chunk_size=65536,
                        slot="slot-b", previous=previous, previous_model="/models/configured.gguf", step=step)


def install(state_dir: Path, pointer: SlotPointer) -> None:
    slots = Slots(state_dir)
    slots.slot_dir(pointer.slot).mkdir(parents=True, exist_ok=True)
    slots.model_path(pointer).write_bytes(MODEL)


@pytest.fixture
def device(tmp_path: Path) -> Path:
    install(tmp_path, OLD)
    install(tmp_path, NEW)
    Slots(tmp_path).write_pointer(OLD)
    return tmp_path


def test_no_update_ever_means_the_configured_model(tmp_path):
    assert resolve_active_model(tmp_path) is None
    assert not (tmp_path / "models").exists()


def test_killed_after_switched_rolls_back_to_the_previous_slot(device):
    Slots(device).write_pointer(NEW)
    Journal(device).record(record("switched"))
    assert resolve_active_model(device) == device / "models" / "slot-a" / "old.gguf"
    assert Slots(device).read_pointer() == OLD
    after = Journal(device).load().update
    assert after is not None and after.step == "rolled_back" and after.reason == "interrupted"
    assert resolve_active_model(device) == device / "models" / "slot-a" / "old.gguf"  # idempotent


def test_rolling_back_the_first_update_goes_back_to_the_configured_model(device):
    Slots(device).write_pointer(NEW)
    Journal(device).record(record("switched", previous=None))
    assert resolve_active_model(device) is None
    assert Slots(device).read_pointer() is None


@pytest.mark.parametrize("step", ["verified", "downloading", "downloaded", "staged"])
def test_before_the_switch_the_previous_slot_stays_and_the_journal_is_left_to_resume(device, step):
    Journal(device).record(record(step))
    assert resolve_active_model(device) == device / "models" / "slot-a" / "old.gguf"
    assert Journal(device).load().update.step == step


def test_a_pointer_switched_before_the_journal_said_so_is_undone(device):
    # Killed between the pointer rename and the journal's "switched": the journal still says "staged".
    Journal(device).record(record("staged"))
    Slots(device).write_pointer(NEW)
    assert resolve_active_model(device) == device / "models" / "slot-a" / "old.gguf"
    assert Slots(device).read_pointer() == OLD


def test_committed_update_starts_on_the_new_slot(device):
    Slots(device).write_pointer(NEW)
    Journal(device).record(record("committed"))
    assert resolve_active_model(device) == device / "models" / "slot-b" / "new.gguf"


def test_a_missing_or_wrong_sized_slot_file_falls_back_to_the_configured_model(device):
    Slots(device).write_pointer(NEW)
    Journal(device).record(record("committed"))
    (device / "models" / "slot-b" / "new.gguf").write_bytes(MODEL[:100])
    assert resolve_active_model(device) is None
    assert Slots(device).read_pointer() is None


def test_a_damaged_pointer_or_journal_never_stops_the_start(device):
    (device / "models" / "current").write_text("{not json")
    assert resolve_active_model(device) is None
    journal = Journal(device)
    journal.directory.mkdir(parents=True, exist_ok=True)
    journal.path.write_text(json.dumps({"update": None, "channels": {}, "extra": 1}))
    assert journal.load() == JournalState()
    assert journal.path.with_name("journal.json.damaged").exists()


def test_journal_remembers_the_last_manifest_per_channel(tmp_path):
    journal = Journal(tmp_path)
    journal.begin(record("verified"), b'{"envelope": 1}')
    journal.record(record("downloading"))
    state = journal.load()
    assert state.update.step == "downloading" and state.channels == {"stable": "ef" * 32}
    assert journal.manifest() == b'{"envelope": 1}'
    assert oct(journal.path.stat().st_mode & 0o777) == "0o600"


def test_steps_are_in_update_order():
    assert STEPS == ("verified", "downloading", "downloaded", "staged", "switched", "committed")


def test_inactive_slot_and_prepare_keep_the_active_slot_untouched(device):
    slots = Slots(device)
    assert slots.inactive(OLD) == "slot-b" and slots.inactive(NEW) == "slot-a" and slots.inactive(None) == "slot-a"
    (slots.slot_dir("slot-b") / "junk.partial").write_bytes(b"x")
    (slots.slot_dir("slot-b") / "keep.bitmap").write_bytes(b"x")
    slots.prepare("slot-b", keep={"keep.bitmap"})
    assert sorted(p.name for p in slots.slot_dir("slot-b").iterdir()) == ["keep.bitmap"]
    assert slots.model_path(OLD).read_bytes() == MODEL


def test_payload_hash_matches_the_verifier_record():
    envelope = json.dumps({"payloadType": "t", "payload": "aGVsbG8=", "signatures": []}).encode()
    assert payload_sha256(envelope) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert dsse.decode_base64("aGVsbG8=", "x") == b"hello"
