"""The device identity (Ed25519, on disk) and the ring of X25519 prekeys (RAM only)."""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edged.crypto import wire
from edged.atomic import write_atomic
from edged.crypto.prekey import PrekeyInfo, build_prekey_record
from edged.errors import ConfigError
from edged.crypto.settings import PrekeySchedule as PrekeySchedule

logger = structlog.get_logger(__name__)


# ---- secret files (writes go through edged.atomic) ----------------------------------------------

def ensure_private_dir(directory: Path) -> None:
    """Create ``directory`` (mode 0700) if it is missing; leave an existing one alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def check_private_file(path: Path) -> None:
    """Refuse a secret file that is not a regular file or that group or others can access."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{path} is not a regular file; a key file must not be a symlink or device")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}, so other users can read the private key; "
            f"run `chmod 600 {path}` (and consider the key compromised if others could read it)"
        )

IDENTITY_FILE: Final = "identity.key"
MAX_KEY_FILE_BYTES: Final = 4096


def load_private_key_file(path: Path) -> Ed25519PrivateKey:
    """Read an Ed25519 PKCS#8 PEM key, refusing group/world-accessible files."""
    check_private_file(path)
    data = path.read_bytes()[:MAX_KEY_FILE_BYTES]
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, edged needs an Ed25519 key")
    return key


def write_private_key_file(path: Path, key: Ed25519PrivateKey, *, overwrite: bool = False) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600, atomically; never replaces a file unless ``overwrite``."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_atomic(path, pem, mode=0o600, exclusive=not overwrite)


class DeviceIdentity:
    """The long-term Ed25519 key that signs prekey records; clients pin its public key."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_bytes: bytes = private_key.public_key().public_bytes_raw()
        self.fingerprint: str = wire.fingerprint(self.public_bytes)

    @staticmethod
    def path_in(state_dir: Path) -> Path:
        return state_dir / IDENTITY_FILE

    @classmethod
    def load(cls, state_dir: Path) -> DeviceIdentity:
        path = cls.path_in(state_dir)
        if not path.exists():
            raise ConfigError(f"no device identity at {path}; run `edged keys init --state-dir {state_dir}`")
        return cls(load_private_key_file(path))

    @classmethod
    def load_or_create(cls, state_dir: Path) -> DeviceIdentity:
        """The identity in ``state_dir/identity.key``, created with mode 0600 if missing."""
        path = cls.path_in(state_dir)
        if path.exists() or path.is_symlink():
            return cls(load_private_key_file(path))
        ensure_private_dir(state_dir)
        key = Ed25519PrivateKey.generate()
        try:
            write_private_key_file(path, key)
        except FileExistsError:
            # Another process created it between our check and our write: use theirs.
            return cls(load_private_key_file(path))
        identity = cls(key)
        logger.info("created device identity", path=str(path), fingerprint=identity.fingerprint)
        return identity

    def sign(self, message: bytes) -> bytes:
        return self._private_key.sign(message)

    def build_prekey_record(self, *, device_id: str, prekey_pub: bytes, not_before: int, not_after: int) -> bytes:
        return build_prekey_record(self._private_key, device_id=device_id, prekey_pub=prekey_pub,
                                   not_before=not_before, not_after=not_after)

    def __repr__(self) -> str:
        return f"DeviceIdentity(fingerprint={self.fingerprint})"


@dataclass(frozen=True, slots=True)
class _Prekey:
    private_key: X25519PrivateKey
    info: PrekeyInfo
    record: bytes
    created_at: float
    delete_at: float


class PrekeyRing:
    """The device's prekeys, newest first. A new one is made at construction (i.e. every start)."""

    def __init__(self, identity: DeviceIdentity, device_id: str, *, now: float,
                 schedule: PrekeySchedule | None = None,
                 key_factory: Callable[[], X25519PrivateKey] = X25519PrivateKey.generate) -> None:
        self._identity = identity
        self._device_id = device_id
        self.schedule = schedule or PrekeySchedule()
        self._key_factory = key_factory
        self._lock = threading.Lock()
        self._prekeys: dict[bytes, _Prekey] = {}
        self._current = self._make(now)

    @property
    def retention_s(self) -> float:
        """Upper bound on how long a prekey stays usable after it is made."""
        return float(self.schedule.valid_for_s + self.schedule.keep_after_expiry_s)

    def current_record(self) -> bytes:
        """The signed record of the newest prekey, as published on MQTT and the socket."""
        with self._lock:
            return self._current.record

    def current_info(self) -> PrekeyInfo:
        with self._lock:
            return self._current.info

    def lookup(self, prekey_id: bytes, now: float) -> X25519PrivateKey | None:
        """The private key for ``prekey_id`` if it is known and not past ``not_after + keep``."""
        with self._lock:
            prekey = self._prekeys.get(prekey_id)
            if prekey is None:
                return None
            if now >= prekey.delete_at:
                self._delete_expired(now)
                return None
            return prekey.private_key

    def rotate_if_due(self, now: float) -> bool:
        """Make a new prekey when the schedule says so (or the clock jumped back); drop expired ones.

        Returns True when a new record must be published.
        """
        with self._lock:
            current = self._current
            due = now >= current.created_at + self.schedule.rotate_every_s or now < current.info.not_before
            if due:
                self._current = self._make_locked(now)
            self._delete_expired(now)
            return due

    def __len__(self) -> int:
        with self._lock:
            return len(self._prekeys)

    def _make(self, now: float) -> _Prekey:
        with self._lock:
            return self._make_locked(now)

    def _make_locked(self, now: float) -> _Prekey:
        private_key = self._key_factory()
        public = private_key.public_key().public_bytes_raw()
        not_before = max(0, int(now) - self.schedule.not_before_skew_s)
        not_after = int(now) + self.schedule.valid_for_s
        record = self._identity.build_prekey_record(device_id=self._device_id, prekey_pub=public,
                                                    not_before=not_before, not_after=not_after)
        info = PrekeyInfo(device_id=self._device_id, prekey_id=wire.prekey_id(public), prekey_pub=public,
                          not_before=not_before, not_after=not_after)
        prekey = _Prekey(private_key, info, record, now, float(not_after + self.schedule.keep_after_expiry_s))
        self._prekeys[info.prekey_id] = prekey
        logger.info("new prekey", prekey_id=info.prekey_id.hex(), not_after=not_after)
        return prekey

    def _delete_expired(self, now: float) -> None:
        for pk_id in [pk_id for pk_id, prekey in self._prekeys.items() if now >= prekey.delete_at]:
            if self._prekeys[pk_id] is not self._current:
                del self._prekeys[pk_id]
                logger.info("deleted expired prekey", prekey_id=pk_id.hex())
