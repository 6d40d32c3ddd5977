"""Careful file writes for key and allow-list files: atomic replace, fsync, exact modes."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from edged.errors import ConfigError


def atomic_write(path: Path, data: bytes, *, mode: int, exclusive: bool = False) -> None:
    """Write ``data`` to a temp file beside ``path`` with ``mode``, fsync it, rename it into place.

    With ``exclusive`` an existing ``path`` is never replaced (the final step is a hard link,
    which fails if the name exists), so two concurrent creators cannot overwrite each other.
    """
    directory = path.parent
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    temp_path = Path(temp_name)
    try:
        # mkstemp makes 0600; set the final mode before any data is written.
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(temp_path, path)
            temp_path.unlink()
        else:
            os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
