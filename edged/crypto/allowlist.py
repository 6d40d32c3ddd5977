"""The client allow-list (``clients.toml``): strict model, reload keeping the last good list, rate limits."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edged.crypto import wire
from edged.crypto.response_topic import normalise_prefix, prefix_problem
from edged.errors import ConfigError
from edged.strictmodes import check_strict
from edged.validation import StrictModel, describe_validation_error, parse_toml, read_toml

logger = structlog.get_logger(__name__)

CLIENTS_FILE: Final = "clients.toml"
MAX_ALLOW_LIST_BYTES: Final = 4 * 1024 * 1024
MAX_CLIENTS: Final = 10_000


class ClientEntry(StrictModel):
    """One ``[[clients]]`` table."""

    label: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                       description="short unique name shown in logs, e.g. 'kitchen-tablet'")
    public_key: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="hex of the client's 32-byte Ed25519 public key")
    response_prefix: str = Field(min_length=1, max_length=512,
                                 description="MQTT topic prefix responses may go to, or 'local' for the Unix socket")
    expires: datetime | None = Field(default=None, description="entry stops working at this time (with a UTC offset)")
    requests_per_minute: int | None = Field(default=None, ge=1, le=100_000, description="rate limit; unset = unlimited")
    commands: bool = Field(default=False, description="may send operator commands (profile override, status "
                                                      "refresh) on the device's commands topic")

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(value))
        return value.lower()

    @field_validator("response_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        value = normalise_prefix(value)  # a trailing "/" is a common way to write a prefix: accept it
        problem = prefix_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("give a UTC offset, e.g. 2027-01-31T00:00:00Z")
        return value

    @property
    def public_bytes(self) -> bytes:
        return bytes.fromhex(self.public_key)


class AllowListFile(StrictModel):
    """The whole ``clients.toml``."""

    clients: list[ClientEntry] = Field(default_factory=list, max_length=MAX_CLIENTS,
                                       description="one table per allowed client key")

    @model_validator(mode="after")
    def _unique(self) -> AllowListFile:
        for field in ("label", "public_key"):
            seen: set[str] = set()
            for entry in self.clients:
                value = getattr(entry, field)
                if value in seen:
                    raise ValueError(f"duplicate {field} {value!r}: each client needs its own label and key")
                seen.add(value)
        return self


@dataclass(frozen=True, slots=True)
class AllowedClient:
    """A client as the envelope sees it, with its verify key built once at load time."""

    label: str
    public_key: bytes
    verify_key: Ed25519PublicKey
    response_prefix: str
    expires_at: float | None
    requests_per_minute: int | None
    commands: bool = False


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did: ``ok`` False means the previous list is still in force."""

    ok: bool
    clients: int
    error: str | None = None


def parse_allow_list(text: str, source: str = "clients.toml") -> AllowListFile:
    """Parse and validate allow-list TOML; ConfigError names the field path that is wrong."""
    return _validate(parse_toml(text, source), source)


def _validate(raw: dict[str, Any], source: str) -> AllowListFile:
    try:
        return AllowListFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_validation_error(exc, separator='; ')}") from exc


def read_allow_list_file(path: Path) -> AllowListFile:
    """The validated file; a missing file is an empty list. ConfigError if others could rewrite it."""
    check_strict(path, "client allow-list")
    if not path.exists():
        return AllowListFile()
    return _validate(read_toml(path, MAX_ALLOW_LIST_BYTES), str(path))


def _index(parsed: AllowListFile) -> dict[bytes, AllowedClient]:
    return {
        entry.public_bytes: AllowedClient(
            label=entry.label, public_key=entry.public_bytes,
            verify_key=Ed25519PublicKey.from_public_bytes(entry.public_bytes),
            response_prefix=entry.response_prefix,
            expires_at=entry.expires.timestamp() if entry.expires is not None else None,
            requests_per_minute=entry.requests_per_minute, commands=entry.commands,
        )
        for entry in parsed.clients
    }


def _file_signature(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class AllowList:
    """The allowed clients, swapped atomically on reload; lookups never block on a reload."""

    def __init__(self, path: Path, clients: dict[bytes, AllowedClient],
                 signature: tuple[int, int, int] | None) -> None:
        self.path = path
        self._clients = clients
        self._signature = signature
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, path: Path) -> AllowList:
        """Load ``path``; ConfigError if it is invalid, an empty list (with a warning) if missing."""
        signature = _file_signature(path)
        clients = _index(read_allow_list_file(path))
        if signature is None:
            logger.warning("client allow-list missing, no sealed requests will be admitted", path=str(path))
        return cls(path, clients, signature)

    def __len__(self) -> int:
        return len(self._clients)

    def clients(self) -> list[AllowedClient]:
        return list(self._clients.values())

    def lookup(self, client_pub: bytes, now: float) -> AllowedClient | None:
        """The entry for ``client_pub`` unless it is missing or expired at ``now``."""
        client = self._clients.get(client_pub)
        if client is None or (client.expires_at is not None and now >= client.expires_at):
            return None
        return client

    def reload_if_changed(self) -> ReloadResult | None:
        """Reload when the file's mtime, size or inode changed; None when nothing changed."""
        if _file_signature(self.path) == self._signature:
            return None
        return self.reload()

    def reload(self) -> ReloadResult:
        """Re-read the file; on any error keep the previous list and say what was wrong."""
        with self._reload_lock:
            signature = _file_signature(self.path)
            try:
                clients = _index(read_allow_list_file(self.path))
            except (ConfigError, OSError) as exc:
                # Remember the bad version so a periodic check does not log it again every time.
                self._signature = signature
                logger.error("client allow-list reload failed, keeping the previous list",
                             path=str(self.path), error=str(exc), clients=len(self._clients))
                return ReloadResult(ok=False, clients=len(self._clients), error=str(exc))
            if signature is None:
                logger.warning("client allow-list removed, no sealed requests will be admitted", path=str(self.path))
            self._clients = clients
            self._signature = signature
            logger.info("client allow-list loaded", path=str(self.path), clients=len(clients))
            return ReloadResult(ok=True, clients=len(clients))


def client_fingerprint(public_key_hex: str) -> str:
    return wire.fingerprint(bytes.fromhex(public_key_hex))
