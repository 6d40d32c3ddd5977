"""Find and read the broker secrets: absolute paths, or systemd credentials in $CREDENTIALS_DIRECTORY."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edged.errors import ConfigError

MAX_PASSWORD_BYTES = 65535  # the MQTT password field is a 2-byte-length binary string


def resolve_credential_path(path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """An absolute ``path`` as it is; a relative one inside ``$CREDENTIALS_DIRECTORY``.

    systemd sets ``CREDENTIALS_DIRECTORY`` for a unit with ``LoadCredential=`` or
    ``SetCredentialEncrypted=``; the files there are readable only by the service.
    """
    if path.is_absolute():
        return path
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"{path} is a relative path, which names a systemd credential, but "
            "$CREDENTIALS_DIRECTORY is not set; use an absolute path or LoadCredential="
        )
    return Path(directory) / path


def read_password(path: Path, environ: Mapping[str, str] | None = None) -> str:
    """The password in the file: UTF-8, one trailing newline removed, not empty."""
    resolved = resolve_credential_path(path, environ)
    try:
        raw = resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the MQTT password file {resolved}: {exc.strerror}") from exc
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise ConfigError(f"the MQTT password file {resolved} is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the MQTT password file {resolved} is longer than {MAX_PASSWORD_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the MQTT password file {resolved} is not UTF-8") from exc
