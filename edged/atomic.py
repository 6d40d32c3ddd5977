"""Crash-safe file writes (temp file, fsync, rename, fsync dir) and bounded reads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import structlog

logger = structlog.get_logger(__name__)

TEMP_SUFFIX = ".tmp"


def write_atomic(path: Path, data: bytes, mode: int = 0o644, *, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file.

    The temp file lives in the same directory (rename is only atomic within one file system)
    and has a name no reader ever opens, so a temp file left by a crash is ignored by readers
    and removed by the next write. With ``exclusive`` an existing ``path`` is never replaced
    (the last step is a hard link, which fails if the name exists): two creators cannot
    overwrite each other, and FileExistsError says so.
    """
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as temp_file:
            temp_file.write(data)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        if exclusive:
            os.link(temp_name, path)
            os.unlink(temp_name)
        else:
            os.replace(temp_name, path)
    except BaseException:
        _unlink_quietly(Path(temp_name))
        raise
    fsync_directory(directory)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically, refusing to replace an existing file (used for private keys)."""
    try:
        write_atomic(path, data, mode, exclusive=True)
    except FileExistsError:
        raise FileExistsError(f"{path} already exists; refusing to overwrite it") from None


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable: the new directory entry reaches the disk."""
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """Read at most ``max_bytes`` + 1 bytes, so the caller can tell an oversized file apart."""
    with path.open("rb") as file:
        return file.read(max_bytes + 1)


def remove_stale_temps(path: Path) -> int:
    """Delete temp files a crashed ``write_atomic(path, ...)`` left behind; returns how many."""
    removed = 0
    for stale in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
        _unlink_quietly(stale)
        removed += 1
    if removed:
        logger.info("stale temp files removed", file=path.name, count=removed)
    return removed


def _unlink_quietly(path: Path) -> None:
    path.unlink(missing_ok=True)
