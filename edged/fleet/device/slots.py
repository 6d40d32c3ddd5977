"""A/B model slots under ``<state dir>/models/`` (a GGUF file or an ONNX directory each) and the start-up repair."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from edged.errors import UpdateError
from edged import atomic
from edged.fleet import dsse
from edged.fleet.artifacts import ONNX_CONFIG_FILE
from edged.fleet.device.journal import BEFORE_SWITCH, Journal, SlotName, SlotPointer
from edged.fleet.device.release_files import directory_size

logger = structlog.get_logger(__name__)

SLOTS: Final[tuple[SlotName, SlotName]] = ("slot-a", "slot-b")
POINTER_NAME: Final = "current"
MAX_POINTER_BYTES: Final = 4096


class Slots:
    """``models/slot-a/``, ``models/slot-b/`` and ``models/current`` (JSON, replaced by atomic rename)."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "models"
        self.pointer_path = self.root / POINTER_NAME

    def read_pointer(self) -> SlotPointer | None:
        """The active slot, or None (the configured model); a damaged pointer counts as None."""
        try:
            data = atomic.read_bounded(self.pointer_path, MAX_POINTER_BYTES)
        except FileNotFoundError:
            return None
        try:
            return SlotPointer.model_validate(dsse.loads_strict(data, "slot pointer"))
        except (UpdateError, ValidationError):
            logger.error("slot pointer damaged", path=str(self.pointer_path))
            return None

    def write_pointer(self, pointer: SlotPointer | None) -> None:
        """Switch slots: a crash leaves the old or the new pointer, never a mix (rename, then fsync the dir)."""
        if pointer is None:
            if self.pointer_path.exists():
                self.pointer_path.unlink()
                atomic.fsync_directory(self.root)
            return
        atomic.write_atomic(self.pointer_path, (pointer.model_dump_json() + "\n").encode("utf-8"), mode=0o600)

    def slot_dir(self, slot: SlotName) -> Path:
        return self.root / slot

    def model_path(self, pointer: SlotPointer) -> Path:
        return self.slot_dir(pointer.slot) / pointer.model

    def inactive(self, active: SlotPointer | None) -> SlotName:
        return SLOTS[1] if active is not None and active.slot == SLOTS[0] else SLOTS[0]

    def prepare(self, slot: SlotName, keep: set[str]) -> Path:
        """Empty ``slot`` except ``keep`` (a download to resume); never called for the active slot."""
        directory = self.slot_dir(slot)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for entry in directory.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        atomic.fsync_directory(directory)
        return directory

    def usable(self, pointer: SlotPointer) -> bool:
        """Cheap start-up check of what was verified before the switch.

        A GGUF file: its size and magic. An ONNX directory (a real one, no symlink anywhere in it): the
        total size of its files and its edged_model.json.
        """
        path = self.model_path(pointer)
        try:
            if path.is_symlink():
                return False
            if path.is_dir():
                return directory_size(path) == pointer.size and (path / ONNX_CONFIG_FILE).is_file()
            if path.stat().st_size != pointer.size:
                return False
            with path.open("rb") as model:
                return model.read(4) == b"GGUF"
        except OSError:
            return False


def resolve_active_model(state_dir: Path) -> Path | None:
    """Finish or undo a half-done update, then name the model to start with (None = the configured one).

    - killed after ``switched`` but before ``committed``: the health check never passed (or the new model
      crashed the daemon), so the pointer goes back to the previous slot and the update is ``rolled_back``;
    - killed before ``switched``: the pointer must still be the previous one (a crash between the pointer
      rename and the journal write is undone here); the update service resumes the rest after start;
    - a pointer to a missing or wrong-sized file is dropped: the configured model is always valid to start on.
    """
    slots = Slots(state_dir)
    journal = Journal(state_dir)
    pointer = slots.read_pointer()
    update = journal.load().update if journal.path.exists() else None
    if update is not None and update.step == "switched":
        slots.write_pointer(update.previous)
        journal.record(update.at("rolled_back", "interrupted",
                                 "the daemon stopped (crashed, was killed or lost power) while the new model was "
                                 "on trial, before its health check passed; back on the previous model"))
        logger.warning("update rolled back at start", channel=update.channel, version=update.version)
        pointer = update.previous
    elif update is not None and update.step in BEFORE_SWITCH and pointer != update.previous:
        slots.write_pointer(update.previous)
        logger.warning("slot pointer restored at start", channel=update.channel, version=update.version)
        pointer = update.previous
    if pointer is None:
        return None
    if not slots.usable(pointer):
        logger.error("active slot unusable", slot=pointer.slot, model=pointer.model)
        slots.write_pointer(None)
        return None
    return slots.model_path(pointer)
