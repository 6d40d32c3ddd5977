"""Wire formats of model updates: pull requests, binary chunk frames, the retained state report, topic names."""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import Field, ValidationError

from edged.errors import UpdateError
from edged.fleet import dsse
from edged.fleet.manifest import MAX_CHUNK_SIZE, Name
from edged.validation import StrictModel

MAX_PULL_BYTES: Final = 1024
MAX_PULL_CHUNKS: Final = 64  # one request may not make the depot send more than this (amplification bound)
FRAME_MAGIC: Final = b"EDCH"
FRAME_VERSION: Final = 1
# magic, frame version, kind, channel length, artifact length, manifest version, index, data length, sha256(data)
_HEADER: Final = struct.Struct(">4sBBBBQII32s")
HEADER_BYTES: Final = _HEADER.size
MAX_ERROR_TEXT: Final = 512
KIND_DATA: Final = 0
KIND_ERROR: Final = 1


class PullRequest(StrictModel):
    """Device to depot, JSON on ``<prefix>/<device>/update/pull``: send me these chunks of this release."""

    v: Literal[1] = Field(default=1, description="format version")
    channel: Name = Field(description="release channel of the manifest")
    version: int = Field(ge=1, le=2**63 - 1, description="manifest version; the depot serves only that release")
    artifact: str = Field(min_length=1, max_length=128, description="artifact name in the manifest")
    first: int = Field(ge=0, le=2**32 - 1, description="first chunk index")
    count: int = Field(ge=1, le=MAX_PULL_CHUNKS, description="number of consecutive chunks")

    def encode(self) -> bytes:
        return self.model_dump_json().encode("utf-8")


def parse_pull(payload: bytes) -> PullRequest:
    if len(payload) > MAX_PULL_BYTES:
        raise UpdateError("malformed", "pull request is too long")
    try:
        return PullRequest.model_validate(dsse.loads_strict(payload, "pull request"))
    except ValidationError as exc:
        raise UpdateError("malformed", f"pull request: {dsse.describe_validation_error(exc)}") from None


class ChunkHeader(StrictModel):
    """The checked header of a chunk frame (the data itself stays a memoryview)."""

    kind: Literal[0, 1] = Field(description="0 = chunk data, 1 = the depot cannot serve the request (data = reason)")
    channel: Name = Field(description="release channel")
    version: int = Field(ge=1, le=2**63 - 1, description="manifest version the chunk belongs to")
    artifact: str = Field(min_length=1, max_length=128, description="artifact name")
    index: int = Field(ge=0, le=2**32 - 1, description="chunk index (first requested index for an error)")
    sha256: bytes = Field(min_length=32, max_length=32, description="SHA-256 of the data (zeros for an error)")


@dataclass(frozen=True)
class ChunkFrame:
    header: ChunkHeader
    data: memoryview

    def data_is_intact(self) -> bool:
        return hashlib.sha256(self.data).digest() == self.header.sha256

    def error_text(self) -> str:
        return bytes(self.data[:MAX_ERROR_TEXT]).decode("utf-8", errors="replace")


def encode_chunk(
    channel: str, version: int, artifact: str, index: int, data: bytes, digest: bytes | None = None
) -> bytes:
    """A data frame: fixed 56-byte header, channel and artifact names, then the raw chunk bytes."""
    names = channel.encode("ascii") + artifact.encode("ascii")
    digest = digest if digest is not None else hashlib.sha256(data).digest()
    header = _HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, KIND_DATA, len(channel), len(artifact), version, index, len(data), digest
    )
    return b"".join((header, names, data))


def encode_error(channel: str, version: int, artifact: str, index: int, reason: str) -> bytes:
    text = reason.encode("utf-8")[:MAX_ERROR_TEXT]
    names = channel.encode("ascii") + artifact.encode("ascii")
    header = _HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, KIND_ERROR, len(channel), len(artifact), version, index, len(text), bytes(32)
    )
    return b"".join((header, names, text))


def parse_chunk(payload: bytes) -> ChunkFrame:
    """Check the framing (not the data hash: see ``ChunkFrame.data_is_intact``); UpdateError("malformed")."""
    if len(payload) < HEADER_BYTES:
        raise UpdateError("malformed", "chunk frame shorter than its header")
    magic, frame_version, kind, channel_len, artifact_len, version, index, data_len, digest = _HEADER.unpack_from(
        payload
    )
    if magic != FRAME_MAGIC or frame_version != FRAME_VERSION:
        raise UpdateError("malformed", "not an edged chunk frame (magic or frame version)")
    names_end = HEADER_BYTES + channel_len + artifact_len
    if data_len > MAX_CHUNK_SIZE or len(payload) != names_end + data_len:
        raise UpdateError("malformed", "chunk frame length does not match its header")
    view = memoryview(payload)
    try:
        channel = bytes(view[HEADER_BYTES : HEADER_BYTES + channel_len]).decode("ascii")
        artifact = bytes(view[HEADER_BYTES + channel_len : names_end]).decode("ascii")
        header = ChunkHeader(
            kind=kind, channel=channel, version=version, artifact=artifact, index=index, sha256=digest
        )
    except (UnicodeDecodeError, ValidationError):
        raise UpdateError("malformed", "chunk frame header fields are invalid") from None
    return ChunkFrame(header, view[names_end:])


UpdatePhase = Literal[
    "idle", "verifying", "downloading", "paused", "deferred", "installing", "active", "rejected", "rolled_back",
    "failed",
]


class ReleaseRef(StrictModel):
    channel: str = Field(max_length=64, description="release channel")
    version: int = Field(ge=0, description="manifest version")


class ActiveModel(StrictModel):
    """What the device serves now: a slot installed by an update, or the configured model (slot None)."""

    slot: str | None = Field(default=None, description="slot-a, slot-b, or None for the configured model")
    model: str = Field(max_length=256, description="the GGUF file or ONNX directory name")
    release: ReleaseRef | None = Field(default=None, description="the release that installed it")


class UpdateStateReport(StrictModel):
    """Retained JSON on ``<prefix>/<device>/update/state``: the device's latest update state."""

    device_id: str = Field(max_length=128, description="the device")
    state: UpdatePhase = Field(description="what the device is doing or what happened last")
    reason: str | None = Field(default=None, max_length=64,
                               description="machine word for paused/deferred/rejected/failed/rolled_back")
    detail: str | None = Field(default=None, max_length=300, description="one line for people")
    release: ReleaseRef | None = Field(default=None, description="the release this state is about")
    step: str | None = Field(default=None, max_length=32, description="the journal step of that release")
    progress_pct: float | None = Field(default=None, ge=0, le=100, description="download progress")
    bytes_done: int | None = Field(default=None, ge=0, description="bytes received and written")
    bytes_total: int | None = Field(default=None, ge=0, description="artifact size")
    active: ActiveModel | None = Field(default=None, description="the model serving requests now")
    time_unix_ms: int = Field(default_factory=lambda: int(time.time() * 1000), description="when it was reported")

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")

    def label(self) -> str:
        """``downloading (42%)``, ``rejected (signature)``, ``active``: what `edged fleet status` shows."""
        if self.state in ("downloading", "paused") and self.progress_pct is not None:
            return f"{self.state} ({self.progress_pct:.0f}%)"
        return f"{self.state} ({self.reason})" if self.reason else self.state


def parse_state(payload: bytes) -> UpdateStateReport:
    try:
        return UpdateStateReport.model_validate_json(payload)
    except ValidationError as exc:
        raise UpdateError("malformed", f"update state: {dsse.describe_validation_error(exc)}") from None
