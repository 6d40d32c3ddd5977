"""Who is on the other end of a Unix socket: SO_PEERCRED for uid, gid and pid, SO_PEERGROUPS for the groups."""

from __future__ import annotations

import errno
import socket
import struct
from dataclasses import dataclass

NOBODY = 65534  # the overflow uid and gid: never a plaintext identity


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()  # supplementary groups (SO_PEERGROUPS), at connect time

    def __str__(self) -> str:
        return f"uid={self.uid},gid={self.gid},pid={self.pid}"


# Linux's SO_PEERGROUPS (4.13+; Python has no name for it): the peer's supplementary groups as the
# kernel saw them at connect(). SO_PEERCRED has only the primary gid.
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
MAX_PEER_GROUPS = 65536  # NGROUPS_MAX


def peer_groups(sock: socket.socket) -> frozenset[int]:
    """The peer's supplementary gids, or none when the kernel cannot tell (then only the primary gid counts)."""
    size = 64 * 4
    while size <= MAX_PEER_GROUPS * 4:
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, size)
        except OSError as exc:
            if exc.errno == errno.ERANGE:  # more groups than fit: ask again with room for them
                size *= 4
                continue
            return frozenset()
        return frozenset(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return frozenset()


def peer_of_socket(sock: socket.socket) -> Peer:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return Peer(pid, uid, gid, peer_groups(sock))


def plaintext_allowed(peer: Peer, uids: set[int], gids: set[int]) -> bool:
    """The plaintext rule of every local socket (frames and HTTP): a listed uid, or a listed group."""
    if peer.uid == NOBODY:  # every unmapped user looks like this (user namespaces, PrivateUsers=)
        return False
    return peer.uid in uids or peer.gid in gids or not peer.groups.isdisjoint(gids)
