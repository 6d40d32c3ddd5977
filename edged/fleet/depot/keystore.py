"""The operator's key directory: Ed25519 root and release keys, every signed root, signed releases."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edged.errors import ConfigError, UpdateError
from edged import atomic
from edged.fleet import dsse
from edged.fleet.manifest import RELEASE_PAYLOAD_TYPE, ReleaseManifest, encode_manifest
from edged.fleet.trust import MAX_ROLE_KEYS, RoleKeys, TrustRoot, public_key_hex, read_self_signed_root, sign_root

logger = structlog.get_logger(__name__)

Role = Literal["root", "release"]
ROLES: Final[tuple[Role, ...]] = ("root", "release")
KEY_SUFFIX: Final = ".pem"
MIN_KEYID_PREFIX: Final = 8


class OperatorKeys:
    """``KEYS/{root,release}/<keyid16>.pem`` (0600), ``KEYS/root.json``, ``KEYS/roots/``, ``KEYS/releases/``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root_path = directory / "root.json"

    @classmethod
    def create(
        cls,
        directory: Path,
        *,
        root_keys: int,
        root_threshold: int,
        release_keys: int,
        release_threshold: int,
        expires: datetime,
    ) -> OperatorKeys:
        """Make a new key directory with fresh keys and a self-signed root v1."""
        if directory.exists() and any(directory.iterdir()):
            raise ConfigError(f"{directory} is not empty; refusing to mix a new fleet with existing keys")
        _check_role_size("root", root_keys, root_threshold)
        _check_role_size("release", release_keys, release_threshold)
        keys = cls(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        root_private = [keys._new_key("root") for _ in range(root_keys)]
        release_private = [keys._new_key("release") for _ in range(release_keys)]
        root = TrustRoot(
            version=1,
            expires=expires,
            root=_role([public_key_hex(key.public_key()) for key in root_private], root_threshold, "root"),
            release=_role([public_key_hex(key.public_key()) for key in release_private], release_threshold, "release"),
        )
        keys._publish_root(sign_root(root, root_private), root)
        return keys

    def current_root(self) -> TrustRoot:
        try:
            return read_self_signed_root(atomic.read_bounded(self.root_path, dsse.MAX_ENVELOPE_BYTES))
        except FileNotFoundError:
            raise ConfigError(f"{self.root_path} not found: is {self.directory} a key directory?") from None
        except UpdateError as exc:
            raise ConfigError(f"{self.root_path} is invalid: {exc}") from None

    def signing_keys(self, role: Role, listed: RoleKeys) -> list[Ed25519PrivateKey]:
        """The private keys of ``role`` on hand that ``listed`` names; ConfigError below its threshold."""
        wanted = set(listed.keys)
        found = [key for key in self._private_keys(role) if public_key_hex(key.public_key()) in wanted]
        if len(found) < listed.threshold:
            raise ConfigError(
                f"{len(found)} {role} key(s) of the current root found in {self.directory / role}, "
                f"{listed.threshold} needed (bring the offline keys back for this step)"
            )
        return found

    def check_next_version(self, channel: str, version: int) -> None:
        """ConfigError unless ``version`` is above every release signed here for ``channel``."""
        for existing in (self.directory / "releases").glob(f"{channel}-*.json"):
            version_text = existing.stem.removeprefix(f"{channel}-")
            if version_text.isdigit() and int(version_text) >= version:
                raise ConfigError(
                    f"{existing.name} exists: devices refuse a version that is not higher than one they saw; "
                    f"use --version {int(version_text) + 1} or more (a rollback is a new, higher version)"
                )

    def sign_release(self, manifest: ReleaseManifest) -> bytes:
        """Sign ``manifest`` with the release keys and keep a copy in ``releases/``."""
        self.check_next_version(manifest.channel, manifest.version)
        signers = self.signing_keys("release", self.current_root().release)
        signed = dsse.sign(RELEASE_PAYLOAD_TYPE, encode_manifest(manifest), signers)
        atomic.write_atomic(self.directory / "releases" / f"{manifest.channel}-{manifest.version}.json", signed)
        return signed

    def rotate_root(
        self,
        *,
        expires: datetime,
        add_root_keys: int = 0,
        add_release_keys: int = 0,
        remove_keyids: Sequence[str] = (),
        root_threshold: int | None = None,
        release_threshold: int | None = None,
    ) -> tuple[TrustRoot, bytes]:
        """Make root N+1 (new keys, removed keys, thresholds, expiry) signed by old and new root keys."""
        old = self.current_root()
        old_signers = self.signing_keys("root", old.root)
        removed = _resolve_removals(old, remove_keyids)
        roles: dict[Role, RoleKeys] = {}
        changes: list[tuple[Role, int, int | None]] = [
            ("root", add_root_keys, root_threshold),
            ("release", add_release_keys, release_threshold),
        ]
        for role, added, threshold in changes:
            listed = _listed(old, role)
            kept = [key for key in listed.keys if key not in removed[role]]
            _check_role_size(role, len(kept) + added, threshold or listed.threshold)
            fresh = [public_key_hex(self._new_key(role).public_key()) for _ in range(added)]
            roles[role] = _role(kept + fresh, threshold or listed.threshold, role)
        new = TrustRoot(version=old.version + 1, expires=expires, root=roles["root"], release=roles["release"])
        signers = old_signers + self.signing_keys("root", new.root)
        envelope = sign_root(new, signers)
        self._publish_root(envelope, new)
        for role in ROLES:
            self._retire(role, removed[role])
        return new, envelope

    def _publish_root(self, envelope: bytes, root: TrustRoot) -> None:
        # The numbered copy first: devices that lag behind need every version, in order.
        atomic.write_atomic(self.directory / "roots" / f"{root.version}.root.json", envelope)
        atomic.write_atomic(self.root_path, envelope)
        logger.info("root published", version=root.version)

    def _new_key(self, role: Role) -> Ed25519PrivateKey:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        role_dir = self.directory / role
        role_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic.write_new(role_dir / f"{dsse.keyid_of(key.public_key())[:16]}{KEY_SUFFIX}", pem, mode=0o600)
        return key

    def _private_keys(self, role: Role) -> list[Ed25519PrivateKey]:
        keys = []
        for path in sorted((self.directory / role).glob(f"*{KEY_SUFFIX}")):
            try:
                key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{path} is not a readable unencrypted PEM private key: {exc}") from None
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError(f"{path} is not an Ed25519 private key")
            keys.append(key)
        return keys

    def _retire(self, role: Role, public_keys: set[str]) -> None:
        retired_dir = self.directory / "retired" / role
        for key in self._private_keys(role):
            if public_key_hex(key.public_key()) in public_keys:
                name = f"{dsse.keyid_of(key.public_key())[:16]}{KEY_SUFFIX}"
                retired_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.replace(self.directory / role / name, retired_dir / name)
                atomic.fsync_directory(retired_dir)


def keyid_of_hex(public_key: str) -> str:
    return hashlib.sha256(bytes.fromhex(public_key)).hexdigest()


def _resolve_removals(root: TrustRoot, prefixes: Sequence[str]) -> dict[Role, set[str]]:
    """Map each key id prefix to exactly one public key of ``root``, by role."""
    removed: dict[Role, set[str]] = {role: set() for role in ROLES}
    for prefix in prefixes:
        matches = [
            (role, key)
            for role in ROLES
            for key in _listed(root, role).keys
            if len(prefix) >= MIN_KEYID_PREFIX and keyid_of_hex(key).startswith(prefix.lower())
        ]
        if len(matches) != 1:
            raise ConfigError(
                f"key id {prefix!r} matches {len(matches)} keys of root v{root.version}; "
                f"give at least {MIN_KEYID_PREFIX} hex digits of one listed key id"
            )
        role, key = matches[0]
        removed[role].add(key)
    return removed


def _check_role_size(role: Role, count: int, threshold: int) -> None:
    # Checked before any key is generated, so a mistake leaves no orphan key files behind.
    if not 1 <= threshold <= count <= MAX_ROLE_KEYS:
        raise ConfigError(f"{role}: need 1 <= threshold ({threshold}) <= number of keys ({count}) <= {MAX_ROLE_KEYS}")


def _listed(root: TrustRoot, role: Role) -> RoleKeys:
    return root.root if role == "root" else root.release


def _role(public_keys: list[str], threshold: int, role: Role) -> RoleKeys:
    try:
        return RoleKeys(threshold=threshold, keys=public_keys)
    except ValidationError as exc:
        raise ConfigError(f"{role} keys: {dsse.describe_validation_error(exc)}") from None
