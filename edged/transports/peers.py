"""Unix socket files and their peers, shared by every transport that listens on one (frames, HTTP)."""

from __future__ import annotations

import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import structlog

from edged.errors import TransportError

logger = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid={self.uid},gid={self.gid},pid={self.pid}"


def peer_of(sock: socket.socket) -> Peer:
    """The connected process, from the kernel (`SO_PEERCRED`): it cannot be forged by the client."""
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Peer(pid, uid, gid)


def plaintext_allowed(peer: Peer, uids: set[int], gids: set[int]) -> bool:
    return peer.uid in uids or peer.gid in gids


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
