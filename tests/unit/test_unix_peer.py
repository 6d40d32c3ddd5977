"""Who is on the other end of the Unix socket (issue 12 item 2): supplementary groups, never nobody."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from pathlib import Path

import pytest

from edged.config import ConfigError, load_config
from edged.transports.peer import NOBODY, Peer, peer_of_socket
from edged.transports.unix import UnixSocketTransport



def transport(uids: set[int], gids: set[int]) -> UnixSocketTransport:
    return UnixSocketTransport(Path("/nonexistent"), core=None, mode=0o660, max_frame=1024,  # type: ignore[arg-type]
                               max_connections=4, plaintext_uids=uids, plaintext_gids=gids,
                               control=None)  # type: ignore[arg-type]  (the peer rule needs no control)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a peer with other uids and groups")
def test_the_peers_supplementary_groups_are_read_from_the_kernel() -> None:
    directory = Path(tempfile.mkdtemp(prefix="edged-peer-"))  # pytest's tmp_path is root-only
    directory.chmod(0o755)
    path = directory / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.settimeout(20)
    server.bind(str(path))
    path.chmod(0o666)
    server.listen()
    child = os.fork()
    if child == 0:  # the peer: another user with two supplementary groups
        try:
            os.setgroups([5000, 5001])
            os.setgid(1234)
            os.setuid(1234)
            client = socket.socket(socket.AF_UNIX)
            client.connect(str(path))
            client.recv(1)
        finally:
            os._exit(0)
    try:
        connection, _ = server.accept()
        peer = peer_of_socket(connection)
        connection.close()
    finally:
        server.close()  # a child still waiting sees the connection end
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        shutil.rmtree(directory)
    assert (peer.uid, peer.gid) == (1234, 1234)
    assert {5000, 5001} <= peer.groups


def test_a_member_of_a_plaintext_group_by_supplementary_group_may_send_plaintext() -> None:
    """SO_PEERCRED carries only the primary gid; the docs promise the service's group members."""
    allowed = transport({0}, {998})
    assert allowed._plaintext_allowed(Peer(pid=1, uid=1000, gid=1000, groups=frozenset({27, 998})))
    assert allowed._plaintext_allowed(Peer(pid=1, uid=1000, gid=998))
    assert not allowed._plaintext_allowed(Peer(pid=1, uid=1000, gid=1000, groups=frozenset({27})))


def test_nobody_never_gets_plaintext() -> None:
    """Under PrivateUsers= or in a user namespace every other user is 65534."""
    lax = transport({NOBODY}, {NOBODY})
    assert not lax._plaintext_allowed(Peer(pid=1, uid=NOBODY, gid=NOBODY, groups=frozenset({NOBODY})))


@pytest.mark.parametrize("key", ["plaintext_uids", "plaintext_gids"])
def test_the_config_refuses_65534(tmp_path: Path, key: str) -> None:
    config = tmp_path / "edged.toml"
    config.write_text(f"[socket]\n{key} = [0, 65534]\n")
    with pytest.raises(ConfigError, match="65534"):
        load_config(config, environ={})
