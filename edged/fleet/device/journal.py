"""The update journal: each step of the update in progress, persisted by name with atomic writes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final, Literal

import structlog
from pydantic import Field, ValidationError

from edged.errors import UpdateError
from edged import atomic
from edged.fleet import dsse
from edged.fleet.manifest import Artifact, Name
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

Step = Literal["verified", "downloading", "downloaded", "staged", "switched", "committed", "rolled_back", "failed"]
# Each name means "this step is done"; the order in which an update passes them.
STEPS: Final[tuple[Step, ...]] = ("verified", "downloading", "downloaded", "staged", "switched", "committed")
TERMINAL: Final[frozenset[str]] = frozenset({"committed", "rolled_back", "failed"})
BEFORE_SWITCH: Final[frozenset[str]] = frozenset({"verified", "downloading", "downloaded", "staged"})
SlotName = Literal["slot-a", "slot-b"]
MAX_JOURNAL_BYTES: Final = 64 * 1024


class SlotPointer(StrictModel):
    """``<state dir>/models/current``: the slot serving, and what is in it."""

    slot: SlotName = Field(description="the active slot")
    model: str = Field(min_length=1, max_length=128, description="the GGUF file or ONNX directory in the slot")
    size: int = Field(ge=1, description="its size in bytes (a directory: all its files), checked at start")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$",
                        description="its SHA-256 (a directory: of its listing); each file verified before the switch")
    channel: Name = Field(description="release channel that installed it")
    version: int = Field(ge=1, description="release version that installed it")


class UpdateRecord(StrictModel):
    """The update in progress (or the last one): enough to finish or undo it after a crash."""

    channel: Name = Field(description="release channel")
    version: int = Field(ge=1, description="release version")
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of the signed manifest payload")
    artifact: Artifact = Field(description="what goes into the slot: the GGUF file, or the ONNX directory "
                                           "(name, total size, listing SHA-256); its files are the manifest's")
    chunk_size: int = Field(ge=1, description="transfer chunk size of the manifest")
    slot: SlotName = Field(description="the slot it is staged into (the inactive one when it began)")
    previous: SlotPointer | None = Field(description="the pointer before the switch; None = the configured model")
    previous_model: str = Field(min_length=1, max_length=4096, description="model path serving when it began")
    step: Step = Field(description="last step done")
    reason: str | None = Field(default=None, max_length=64, description="why it failed or was rolled back")
    detail: str | None = Field(default=None, max_length=300, description="one line for people")
    hash_failures: int = Field(default=0, ge=0, le=100,
                               description="downloads of this release discarded for a wrong SHA-256 so far")

    def at(self, step: Step, reason: str | None = None, detail: str | None = None) -> UpdateRecord:
        return self.model_copy(update={"step": step, "reason": reason, "detail": detail})


class JournalState(StrictModel):
    """``<state dir>/update/journal.json``."""

    update: UpdateRecord | None = Field(default=None, description="the current or last update")
    channels: dict[Name, str] = Field(
        default_factory=dict, max_length=256, description="per channel: payload hash of the last journaled manifest"
    )


def payload_sha256(envelope_bytes: bytes) -> str:
    """Hash of the exact signed payload, as ``ReleaseVerifier`` records it."""
    envelope = dsse.parse_envelope(envelope_bytes)
    return hashlib.sha256(dsse.decode_base64(envelope.payload, "payload")).hexdigest()


class Journal:
    """``journal.json`` plus ``manifest.json`` (the signed envelope of the journaled update)."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "update"
        self.path = self.directory / "journal.json"
        self.manifest_path = self.directory / "manifest.json"

    def load(self) -> JournalState:
        """The journal; a damaged one is moved aside (``journal.json.damaged``) and treated as empty."""
        try:
            data = atomic.read_bounded(self.path, MAX_JOURNAL_BYTES)
        except FileNotFoundError:
            return JournalState()
        try:
            if len(data) > MAX_JOURNAL_BYTES:
                raise UpdateError("state", "journal is oversized")
            return JournalState.model_validate(dsse.loads_strict(data, "update journal"))
        except (UpdateError, ValidationError):
            # Atomic writes never leave half a file, so this is disk damage or tampering: keep the evidence,
            # start clean. The slot pointer alone still names a model that was fully verified before the switch.
            logger.error("update journal damaged", path=str(self.path))
            os.replace(self.path, self.path.with_name("journal.json.damaged"))
            return JournalState()

    def save(self, state: JournalState) -> None:
        atomic.write_atomic(self.path, (state.model_dump_json(indent=2) + "\n").encode("utf-8"), mode=0o600)

    def record(self, update: UpdateRecord) -> JournalState:
        """Persist ``update`` as the current record; its channel now counts as journaled."""
        state = self.load()
        channels = {**state.channels, update.channel: update.payload_sha256}
        new_state = JournalState(update=update, channels=channels)
        self.save(new_state)
        logger.info("update step", channel=update.channel, version=update.version, step=update.step,
                    reason=update.reason)
        return new_state

    def begin(self, update: UpdateRecord, envelope_bytes: bytes) -> None:
        """Keep the signed manifest first, so a journaled update can always be re-verified when resumed."""
        atomic.write_atomic(self.manifest_path, envelope_bytes, mode=0o600)
        self.record(update)

    def manifest(self) -> bytes:
        return atomic.read_bounded(self.manifest_path, dsse.MAX_ENVELOPE_BYTES)
