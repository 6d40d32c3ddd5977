"""The device's trust root (root and release keys with thresholds), its rotation and expiry clock."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Final

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BeforeValidator, Field, PlainSerializer, ValidationError, model_validator

from edged.crypto.clock import UpdateClockPolicy, clock_synchronised
from edged.errors import ConfigError, UpdateError
from edged.strictmodes import check_strict
from edged import atomic
from edged.fleet import dsse
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

ROOT_PAYLOAD_TYPE: Final = "application/vnd.edged.root+json"
MAX_ROLE_KEYS: Final = 16
TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_TIMESTAMP_SHAPE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


def _parse_timestamp(value: object) -> object:
    # Only one spelling is accepted, so that a signed time is never ambiguous.
    if isinstance(value, str):
        try:
            if not _TIMESTAMP_SHAPE.fullmatch(value):
                raise ValueError
            return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            raise ValueError("must be an RFC 3339 UTC time like 2027-01-31T00:00:00Z") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value.astimezone(timezone.utc).replace(microsecond=0)
    return value


def format_timestamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


UtcTimestamp = Annotated[
    datetime, BeforeValidator(_parse_timestamp), PlainSerializer(format_timestamp, return_type=str)
]
PublicKeyHex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="raw 32-byte Ed25519 public key, hex")]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes_raw().hex()


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))


class RoleKeys(StrictModel):
    """The keys of one role and how many of them (distinct) must sign."""

    threshold: int = Field(ge=1, le=MAX_ROLE_KEYS, description="distinct valid signatures needed")
    keys: list[PublicKeyHex] = Field(min_length=1, max_length=MAX_ROLE_KEYS, description="Ed25519 public keys")

    @model_validator(mode="after")
    def _threshold_reachable(self) -> RoleKeys:
        if len(set(self.keys)) != len(self.keys):
            raise ValueError("a key is listed twice")
        if self.threshold > len(self.keys):
            raise ValueError(f"threshold {self.threshold} is more than the {len(self.keys)} keys listed")
        return self

    def key_map(self) -> dict[str, Ed25519PublicKey]:
        """Public keys by key id, as ``dsse.verify`` wants them."""
        public_keys = (public_key_from_hex(text) for text in self.keys)
        return {dsse.keyid_of(key): key for key in public_keys}


class TrustRoot(StrictModel):
    """The trust root document (payload type ``application/vnd.edged.root+json``)."""

    version: int = Field(ge=1, le=2**63 - 1, description="root version; rotation goes N to exactly N+1")
    expires: UtcTimestamp = Field(description="after this instant the root no longer vouches for releases")
    root: RoleKeys = Field(description="offline keys that sign the next trust root")
    release: RoleKeys = Field(description="keys that sign release manifests")

    @model_validator(mode="after")
    def _roles_do_not_share_keys(self) -> TrustRoot:
        # Root keys are meant to stay offline; one also used for releases would not be.
        if set(self.root.keys) & set(self.release.keys):
            raise ValueError("a key may not be both a root key and a release key")
        return self


def encode_root(root: TrustRoot) -> bytes:
    """The exact payload bytes to sign for ``root``."""
    return json.dumps(root.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign_root(root: TrustRoot, keys: Sequence[Ed25519PrivateKey]) -> bytes:
    """Signed root envelope (operator side)."""
    return dsse.sign(ROOT_PAYLOAD_TYPE, encode_root(root), keys)


def parse_root(payload: bytes) -> TrustRoot:
    try:
        return TrustRoot.model_validate(dsse.loads_strict(payload, "trust root"))
    except ValidationError as exc:
        raise UpdateError("malformed", f"trust root: {dsse.describe_validation_error(exc)}") from None


def read_self_signed_root(envelope_bytes: bytes) -> TrustRoot:
    """Parse a root and check that a threshold of its own root keys signed it."""
    envelope = dsse.parse_envelope(envelope_bytes)
    if envelope.payload_type != ROOT_PAYLOAD_TYPE:
        raise UpdateError("payload_type", f"expected {ROOT_PAYLOAD_TYPE!r}")
    # Parsing before verifying is unavoidable here: the keys to verify with are inside.
    root = parse_root(dsse.decode_base64(envelope.payload, "payload"))
    dsse.verify(envelope_bytes, ROOT_PAYLOAD_TYPE, root.root.key_map(), root.root.threshold)
    return root


def system_clock_synced(root: Path | str = "/") -> bool:
    """The daemon's one clock-sync answer (edged.crypto.clock): an error reading it means "not synchronised"."""
    return clock_synchronised(root)


@dataclass(frozen=True)
class ExpiryClock:
    """Expiry checks with an explicit policy for a clock that is not (yet) synchronized.

    ``reject`` (default): refuse with reason ``clock`` until the clock is synced; nothing is
    persisted, so the same document is accepted once time is known. ``trust-system-clock``: check
    against the local clock anyway and log a warning (for devices without any time source). The
    words are [e2e] clock_policy's (crypto/clock.py); expiry is never skipped.
    """

    policy: UpdateClockPolicy = "reject"
    now: Callable[[], datetime] = utc_now
    synced: Callable[[], bool] = field(default=system_clock_synced)

    def check_trusted_time(self) -> datetime:
        if not self.synced():
            if self.policy == "reject":
                raise UpdateError("clock", "the system clock is not synchronized; retry once time is synced")
            logger.warning("expiry checked against unsynced clock")
        return self.now()

    def check_not_expired(
        self, expires: datetime, what: str, reason: str = "expired", now: datetime | None = None
    ) -> None:
        """UpdateError(reason) from ``expires`` on; pass ``now`` to judge several documents at one instant."""
        if now is None:
            now = self.check_trusted_time()
        if now >= expires:
            raise UpdateError(reason, f"{what} expired at {format_timestamp(expires)}")


class TrustStore:
    """The trust root persisted at ``<state dir>/trust/root.json`` (the signed envelope)."""

    def __init__(self, state_dir: Path, clock: ExpiryClock | None = None) -> None:
        self.path = state_dir / "trust" / "root.json"
        self.clock = clock or ExpiryClock()
        self._lock = threading.Lock()
        self._cached: tuple[tuple[int, int, int], TrustRoot] | None = None

    def current(self) -> TrustRoot:
        """The installed root, re-checked against its own signatures; ConfigError if none is valid.

        Re-read whenever the file changed (an atomic rename gives it a new inode), so a root that
        `edged fleet install-root` advanced while the daemon runs takes effect at once.
        """
        check_strict(self.path, "trust root")  # whoever can rewrite it decides which models run
        try:
            stat = self.path.stat()
            file_id = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._cached is not None and self._cached[0] == file_id:
                return self._cached[1]
            data = atomic.read_bounded(self.path, dsse.MAX_ENVELOPE_BYTES)
        except FileNotFoundError:
            raise ConfigError(f"no trust root at {self.path}: run `edged fleet install-root`") from None
        try:
            root = read_self_signed_root(data)
        except UpdateError as exc:
            raise ConfigError(f"trust root {self.path} is invalid: {exc}") from None
        self._cached = (file_id, root)
        return root

    def provision(self, envelope_bytes: bytes, *, replace: bool = False) -> TrustRoot:
        """Install the first root (trusted because an operator put it here), or the same one again."""
        root = read_self_signed_root(envelope_bytes)
        self.clock.check_not_expired(root.expires, f"trust root v{root.version}")
        with self._lock:
            if self.path.exists() and not replace:
                installed = self.current()
                if encode_root(installed) == encode_root(root):
                    return installed
                raise UpdateError(
                    "provisioned", f"trust root v{installed.version} is installed; rotate it, or replace by hand"
                )
            self._persist(envelope_bytes)
        logger.info("trust root installed", version=root.version, replaced=replace)
        return root

    def rotate(self, envelope_bytes: bytes) -> TrustRoot:
        """Accept root N+1: signed by a threshold of root N AND of N+1, not expired."""
        with self._lock:
            old = self.current()
            payload = dsse.verify(envelope_bytes, ROOT_PAYLOAD_TYPE, old.root.key_map(), old.root.threshold)
            new = parse_root(payload)
            dsse.verify(envelope_bytes, ROOT_PAYLOAD_TYPE, new.root.key_map(), new.root.threshold)
            if new.version != old.version + 1:
                raise UpdateError(
                    "version", f"root v{new.version} does not follow v{old.version}; apply roots one at a time"
                )
            self.clock.check_not_expired(new.expires, f"trust root v{new.version}")
            self._persist(envelope_bytes)
        logger.info("trust root rotated", old_version=old.version, version=new.version)
        return new

    def rotate_chain(self, envelopes: Iterable[bytes]) -> TrustRoot:
        """Apply N+1, N+2, ... in order; each step is persisted, so a failure keeps the last good root."""
        root = self.current()
        for envelope_bytes in envelopes:
            root = self.rotate(envelope_bytes)
        return root

    def _persist(self, envelope_bytes: bytes) -> None:
        atomic.write_atomic(self.path, envelope_bytes, mode=0o644)


def root_fingerprint(root: TrustRoot) -> str:
    """Short hex fingerprint of a root's payload, for people comparing two copies."""
    return hashlib.sha256(encode_root(root)).hexdigest()[:16]
