"""Checks for secret files and their directories (writes go through edged.atomic)."""

from __future__ import annotations

import stat
from pathlib import Path

from edged.errors import ConfigError


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
