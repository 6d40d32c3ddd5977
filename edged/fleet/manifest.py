"""Release manifests and the device-side ReleaseVerifier that runs every trust check in order."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Annotated, Final

import structlog
from pydantic import Field, ValidationError, model_validator

from edged.errors import AlreadyAccepted, ConfigError, UnverifiedOffer, UpdateError
from edged.strictmodes import unsafe_reason
from edged import atomic
from edged.fleet import dsse
from edged.fleet.artifacts import ReleaseLayout, layout_of
from edged.fleet.artifacts import is_safe_name as is_safe_name  # re-exported for the operator tools
from edged.fleet.trust import ExpiryClock, TrustStore, UtcTimestamp
from edged.fleet.names import GIB as GIB, Name as Name
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

RELEASE_PAYLOAD_TYPE: Final = "application/vnd.edged.release+json"
KNOWN_FORMATS: Final = ("gguf", "onnx-dir")
MIN_CHUNK_SIZE: Final = 16 * 1024
MAX_CHUNK_SIZE: Final = 1024 * 1024
MAX_CHANNELS: Final = 256
MAX_RELEASE_FILES: Final = 16  # an ONNX directory is graph, weights, tokenizer, edged_model.json: room to spare

DeviceId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$", description="a device id as in the config")]


class Artifact(StrictModel):
    """One file the release installs, bound by size and SHA-256."""

    name: str = Field(min_length=1, max_length=128,
                      description="gguf: the file name in the model slot; onnx-dir: <directory>/<relative path>")
    size: int = Field(ge=1, le=2**53, description="exact size in bytes; also the download's hard cap")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="lowercase hex SHA-256 of the whole file")
    format: str = Field(min_length=1, max_length=32, description="gguf, or onnx-dir for each file of an ONNX directory")


class TargetSelector(StrictModel):
    """Who should install: each non-empty list must match (OR within a list, AND across lists)."""

    devices: list[DeviceId] = Field(default_factory=list, max_length=2000, description="device ids")
    groups: list[Name] = Field(default_factory=list, max_length=64, description="device groups")
    hardware: list[Name] = Field(default_factory=list, max_length=64, description="hardware ids, e.g. rpi5")


class HealthCheck(StrictModel):
    """The smoke test run after installing, before the new model is committed."""

    prompt: str = Field(min_length=1, max_length=2000, description="test prompt (never logged)")
    max_tokens: int = Field(default=16, ge=1, le=512, description="tokens to generate")
    timeout_s: int = Field(default=60, ge=1, le=3600, description="load plus generation must finish in this time")
    expect_nonempty: bool = Field(default=True, description="fail when the answer is empty")


class ReleaseManifest(StrictModel):
    """The signed release manifest (payload type ``application/vnd.edged.release+json``)."""

    fleet: Name = Field(description="fleet name; a device only takes its own fleet's releases")
    channel: Name = Field(description="release channel, e.g. stable; versions are counted per channel")
    version: int = Field(ge=1, le=2**63 - 1, description="strictly increasing per channel")
    expires: UtcTimestamp = Field(description="RFC 3339 UTC; the manifest is refused from this instant on")
    targets: TargetSelector = Field(default_factory=TargetSelector, description="empty lists = every device")
    artifacts: list[Artifact] = Field(min_length=1, max_length=MAX_RELEASE_FILES,
                                      description="the files of this release: one GGUF, or an ONNX directory's files")
    chunk_size: int = Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE, description="bytes per transfer chunk")
    health_check: HealthCheck | None = Field(default=None, description="optional post-install smoke test")


def encode_manifest(manifest: ReleaseManifest) -> bytes:
    """The exact payload bytes to sign for ``manifest``."""
    return json.dumps(manifest.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode("utf-8")


def parse_manifest(payload: bytes) -> ReleaseManifest:
    try:
        return ReleaseManifest.model_validate(dsse.loads_strict(payload, "release manifest"))
    except ValidationError as exc:
        raise UpdateError("malformed", f"release manifest: {dsse.describe_validation_error(exc)}") from None


@dataclass(frozen=True)
class FleetMembership:
    """What a release's target selector is matched against."""

    fleet: str
    device_id: str
    groups: frozenset[str] = frozenset()
    hardware: frozenset[str] = frozenset()

    def matches(self, targets: TargetSelector) -> bool:
        return (
            (not targets.devices or self.device_id in targets.devices)
            and (not targets.groups or bool(self.groups.intersection(targets.groups)))
            and (not targets.hardware or bool(self.hardware.intersection(targets.hardware)))
        )


class ArtifactLimits(StrictModel):
    """What this device is willing to download and install."""

    max_artifact_bytes: int = Field(default=8 * GIB, ge=1, le=2**53, description="cap per artifact")
    max_total_bytes: int = Field(default=8 * GIB, ge=1, le=2**53, description="cap for all artifacts together")
    max_artifacts: int = Field(default=MAX_RELEASE_FILES, ge=1, le=MAX_RELEASE_FILES,
                               description="files per release this device installs")
    allowed_formats: list[str] = Field(
        default_factory=lambda: ["gguf"], max_length=len(KNOWN_FORMATS), description=f"subset of {KNOWN_FORMATS}"
    )

    @model_validator(mode="after")
    def _formats_known(self) -> ArtifactLimits:
        if unknown := set(self.allowed_formats) - set(KNOWN_FORMATS):
            raise ValueError(f"unknown formats {sorted(unknown)}; known: {KNOWN_FORMATS}")
        return self

    def check(self, artifacts: list[Artifact]) -> ReleaseLayout:
        """The release's layout if this device takes it; all before the version is recorded (refused, not half-accepted)."""
        if len(artifacts) > self.max_artifacts:
            raise UpdateError("artifact", f"this device installs at most {self.max_artifacts} file(s) per release, "
                                          f"not {len(artifacts)}")
        for artifact in artifacts:
            if artifact.format not in self.allowed_formats:
                raise UpdateError("artifact", f"format {artifact.format[:32]!r} is not one of {self.allowed_formats}")
        layout = layout_of(artifacts)  # paths, duplicates, one model, edged_model.json
        for artifact in artifacts:
            if artifact.size > self.max_artifact_bytes:
                raise UpdateError("artifact", f"{artifact.name} is over the {self.max_artifact_bytes}-byte cap")
        if layout.total_size > self.max_total_bytes:
            raise UpdateError("artifact", f"artifacts total {layout.total_size} bytes, over the "
                                          f"{self.max_total_bytes} cap")
        return layout


class ChannelRecord(StrictModel):
    version: int = Field(ge=1, le=2**63 - 1, description="highest manifest version accepted on the channel")
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of that manifest's signed payload")


class VersionState(StrictModel):
    """``<state dir>/trust/versions.json``: rollback protection, written before any download."""

    channels: dict[Name, ChannelRecord] = Field(
        default_factory=dict, max_length=MAX_CHANNELS, description="per channel"
    )


class ReleaseVerifier:
    """Runs the device checks on a signed release manifest and persists its version before returning it."""

    def __init__(
        self,
        trust: TrustStore,
        device: FleetMembership,
        limits: ArtifactLimits | None = None,
        clock: ExpiryClock | None = None,
    ) -> None:
        self.trust = trust
        self.device = device
        self.limits = limits or ArtifactLimits()
        self.clock = clock or trust.clock
        self.versions_path = trust.path.parent / "versions.json"
        self._lock = threading.Lock()

    def verify(self, envelope_bytes: bytes) -> ReleaseManifest:
        """Check a new release in the brief's order; UpdateError(reason) names the first failure."""
        with self._lock:
            manifest, payload_sha256, state = self._check(envelope_bytes)
            record = ChannelRecord(version=manifest.version, payload_sha256=payload_sha256)
            new_state = VersionState(channels={**state.channels, manifest.channel: record})
            # Persist before any byte is downloaded, so a replay after a crash is still refused.
            atomic.write_atomic(self.versions_path, (new_state.model_dump_json(indent=2) + "\n").encode("utf-8"))
        logger.info("release accepted", fleet=manifest.fleet, channel=manifest.channel, version=manifest.version)
        return manifest

    def recheck_accepted(self, envelope_bytes: bytes) -> ReleaseManifest:
        """Re-verify the manifest accepted last on its channel (resuming after a restart); persists nothing."""
        with self._lock:
            try:
                manifest, _, _ = self._check(envelope_bytes)
            except AlreadyAccepted as exc:
                # _check stops at the version before the clocks: a resume must still honour expiry.
                accepted: ReleaseManifest = exc.manifest
                self._check_expiry(accepted)
                return accepted
        raise UpdateError("version", f"v{manifest.version} is newer than the one accepted; verify it instead")

    def _check_expiry(self, manifest: ReleaseManifest) -> None:
        try:
            root = self.trust.current()
        except ConfigError as exc:
            raise UpdateError("trust_root", str(exc)) from None
        now = self.clock.check_trusted_time()
        self.clock.check_not_expired(manifest.expires, f"release {manifest.channel} v{manifest.version}", now=now)
        self.clock.check_not_expired(root.expires, f"trust root v{root.version}", reason="root_expired", now=now)

    def highest_versions(self) -> dict[str, int]:
        return {channel: record.version for channel, record in self._load_state().channels.items()}

    def _check(self, envelope_bytes: bytes) -> tuple[ReleaseManifest, str, VersionState]:
        try:
            root = self.trust.current()
        except ConfigError as exc:
            raise UpdateError("trust_root", str(exc)) from None  # local state, not the sender: reported
        try:
            payload = dsse.verify(envelope_bytes, RELEASE_PAYLOAD_TYPE, root.release.key_map(),
                                  root.release.threshold)
        except UpdateError as exc:
            raise UnverifiedOffer(exc.reason, str(exc).removeprefix(f"{exc.reason}: ")) from None
        manifest = parse_manifest(payload)
        if manifest.fleet != self.device.fleet or not self.device.matches(manifest.targets):
            raise UpdateError("target", f"release {manifest.channel} v{manifest.version} does not target this device")
        state = self._load_state()
        payload_sha256 = hashlib.sha256(payload).hexdigest()
        seen = state.channels.get(manifest.channel)
        if seen is not None and manifest.version <= seen.version:
            self._refuse_old_version(manifest, seen, payload_sha256)
        elif seen is None and len(state.channels) >= MAX_CHANNELS:
            raise UpdateError("state", f"this device already tracks {MAX_CHANNELS} channels")
        now = self.clock.check_trusted_time()
        self.clock.check_not_expired(manifest.expires, f"release {manifest.channel} v{manifest.version}", now=now)
        self.clock.check_not_expired(root.expires, f"trust root v{root.version}", reason="root_expired", now=now)
        self.limits.check(manifest.artifacts)
        return manifest, payload_sha256, state

    @staticmethod
    def _refuse_old_version(manifest: ReleaseManifest, seen: ChannelRecord, payload_sha256: str) -> None:
        message = f"{manifest.channel} v{manifest.version} is not above v{seen.version}, the highest seen"
        if manifest.version == seen.version and payload_sha256 == seen.payload_sha256:
            raise AlreadyAccepted(manifest, f"{message} (the same manifest again)")
        raise UpdateError("version", message)

    def _load_state(self) -> VersionState:
        problem = unsafe_reason(self.versions_path)
        if problem is not None:  # a rewritable record of versions re-opens every rollback
            raise UpdateError("state", f"refusing {self.versions_path}: {problem}; chmod go-w it and its directories")
        try:
            data = atomic.read_bounded(self.versions_path, dsse.MAX_ENVELOPE_BYTES)
        except FileNotFoundError:
            return VersionState()
        try:
            return VersionState.model_validate(dsse.loads_strict(data, "versions file"))
        except (UpdateError, ValidationError):
            # Failing closed: treating a damaged file as empty would re-open every rollback.
            raise UpdateError("state", f"{self.versions_path} is damaged; see docs/fleet.md") from None
