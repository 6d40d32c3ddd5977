"""API keys for the HTTP API over TCP: random bearer tokens, stored only as SHA-256 hashes.

A key is 32 random bytes (``edk_`` + URL-safe base64), so a plain SHA-256 is enough: there is nothing
to brute-force that a slow password hash would protect. The file ``api-keys.json`` in the state dir
holds label, hash and creation time; the daemon re-reads it when it changes (polled) or on SIGHUP,
and keeps the last good set when the file is broken.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Iterator

import structlog
from pydantic import Field, ValidationError, field_validator

from edged.atomic import read_bounded, write_atomic
from edged.errors import ConfigError
from edged.validation import StrictModel, describe_validation_error

logger = structlog.get_logger(__name__)

API_KEYS_FILE: Final = "api-keys.json"
KEY_PREFIX: Final = "edk_"
KEY_BYTES: Final = 32
MAX_FILE_BYTES: Final = 1024 * 1024
MAX_KEYS: Final = 1000
# Longer than any key we issue; a longer header is refused before it is hashed.
MAX_PRESENTED_CHARS: Final = 256


class ApiKeyEntry(StrictModel):
    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: str = Field(max_length=64)


class ApiKeysFile(StrictModel):
    version: int = Field(1, ge=1, le=1)
    keys: list[ApiKeyEntry] = Field(default_factory=list, max_length=MAX_KEYS)

    @field_validator("keys")
    @classmethod
    def _unique(cls, keys: list[ApiKeyEntry]) -> list[ApiKeyEntry]:
        for attr in ("label", "sha256"):
            values = [getattr(k, attr) for k in keys]
            if len(values) != len(set(values)):
                raise ValueError(f"duplicate {attr}: each key needs its own label")
        return keys


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


def read_keys_file(path: Path) -> ApiKeysFile:
    """The parsed file; a missing file is an empty set, anything unreadable a ConfigError."""
    try:
        data = read_bounded(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        return ApiKeysFile()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        raw = json.loads(data)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply; no API keys file needs that") from None
    except ValueError as exc:  # invalid UTF-8 or JSON, or an integer of more than 4300 digits
        raise ConfigError(f"{path}: not valid JSON: {str(exc)[:200]}") from None
    try:
        return ApiKeysFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path))) from None


def _write(path: Path, parsed: ApiKeysFile) -> None:
    write_atomic(path, (json.dumps(parsed.model_dump(), indent=2) + "\n").encode(), 0o600)


@contextmanager
def _edit_lock(path: Path) -> Iterator[None]:
    """Two `edged keys api-key` commands at once must not lose each other's change."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_key(path: Path, label: str) -> str:
    """Make a key for `label`, store its hash, and return the key (the only time it exists in clear)."""
    key = new_key()
    try:
        entry = ApiKeyEntry(label=label, sha256=hash_key(key),
                            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))
    except ValidationError:
        raise ConfigError(f"label {label!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-', "
                          "starting with a letter or digit") from None
    with _edit_lock(path):
        parsed = read_keys_file(path)
        if any(k.label == label for k in parsed.keys):
            raise ConfigError(f"a key labelled {label!r} exists; revoke it first or pick another label")
        if len(parsed.keys) >= MAX_KEYS:
            raise ConfigError(f"{path} already holds {MAX_KEYS} keys; revoke unused ones first")
        _write(path, ApiKeysFile(keys=[*parsed.keys, entry]))
    return key


def revoke_key(path: Path, label: str) -> None:
    with _edit_lock(path):
        parsed = read_keys_file(path)
        kept = [k for k in parsed.keys if k.label != label]
        if len(kept) == len(parsed.keys):
            known = ", ".join(k.label for k in parsed.keys) or "none"
            raise ConfigError(f"no key labelled {label!r} in {path}; labels: {known}")
        _write(path, ApiKeysFile(keys=kept))


class ApiKeyStore:
    """The daemon's view of the key file: `check` is constant-time per stored key, `refresh` is cheap."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._hashes: list[tuple[bytes, str]] = []
        self._seen: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return len(self._hashes)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed since the last read (or always with `force`); True if re-read.

        A broken file raises ConfigError and the previous keys stay in force.
        """
        try:
            st = self.path.stat()
            seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            seen = (0, 0, 0)
        if seen == self._seen and not force:
            return False
        parsed = read_keys_file(self.path)
        self._hashes = [(bytes.fromhex(k.sha256), k.label) for k in parsed.keys]
        self._seen = seen
        logger.info("api keys loaded", count=len(self._hashes), path=str(self.path))
        return True

    def check(self, presented: str) -> str | None:
        """The label of the key `presented`, or None; compares against every stored hash alike."""
        if not presented or len(presented) > MAX_PRESENTED_CHARS:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found = None
        for stored, label in self._hashes:
            if hmac.compare_digest(stored, digest):
                found = label
        return found
