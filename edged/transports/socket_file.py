"""Unix socket files for every transport that listens on one: stale-socket removal and a private bind."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import structlog

from edged.errors import TransportError
from edged.paths import check_socket_dir

logger = structlog.get_logger(__name__)


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


def bind_unix_socket(path: Path, mode: int, backlog: int = 128) -> socket.socket:
    """A listening socket at `path` that never exists with a wider mode than `mode`, not even briefly."""
    check_socket_dir(path, create=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 & ~mode)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
