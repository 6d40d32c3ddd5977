"""Listening sockets shared by the transports: a Unix socket that is never wider than its mode, stale-socket cleanup."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from edged.errors import TransportError
from edged.paths import check_socket_dir

logger = structlog.get_logger(__name__)

Accept = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def remove_stale_socket(path: Path) -> None:
    """Remove a socket left by a dead daemon; refuse to steal one that a live daemon still answers on."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise TransportError(f"{path} exists and is not a socket; remove it or choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        logger.info("removed stale socket", path=str(path))
        return
    finally:
        probe.close()
    raise TransportError(f"another edged is already serving on {path}; stop it or choose another --socket")


async def start_unix_listener(path: Path, mode: int, accept: Accept, **kwargs: Any) -> asyncio.AbstractServer:
    """Listen on ``path`` with file mode ``mode``; a live socket there is an error, a stale one is removed."""
    check_socket_dir(path, create=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_socket(path)
    old_umask = os.umask(0o777 & ~mode)  # the socket never exists with a wider mode, not even briefly
    try:
        server = await asyncio.start_unix_server(accept, path=str(path), **kwargs)
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    return server
