"""What another local user can do (issue 12 item 3): runtime dir, idle slots, rewritable trust files."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edged import paths
from edged.crypto.allowlist import AllowList
from edged.errors import ConfigError, UpdateError
from edged.strictmodes import ensure_private_dir, unsafe_reason
from edged.transports import framing
from edged.transports.framing import IdleConnection, encode_json, read_frame
from edged.transports.unix import UnixSocketTransport

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files owned by another uid")


# ---- the /tmp fallback runtime dir ------------------------------------------------------------

def test_the_runtime_dir_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "edged-1000"
    ensure_private_dir(directory)
    assert directory.stat().st_mode & 0o777 == 0o700


@needs_root
def test_a_runtime_dir_made_by_another_user_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "edged-0"
    directory.mkdir(mode=0o700)
    os.chown(directory, 1234, 1234)  # the attacker was first
    with pytest.raises(ConfigError, match="owned by uid 1234"):
        ensure_private_dir(directory)


def test_a_symlinked_or_shared_runtime_dir_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(ConfigError, match="symlink"):
        ensure_private_dir(tmp_path / "link")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable"):
        ensure_private_dir(shared)


def test_the_daemon_and_ask_check_the_tmp_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fallback = tmp_path / "edged-0"
    monkeypatch.setattr(paths, "tmp_runtime_dir", lambda: fallback)
    paths.check_socket_dir(fallback / "edged.sock", create=True)  # the daemon: created 0700
    assert fallback.stat().st_mode & 0o777 == 0o700
    paths.check_socket_dir(fallback / "edged.sock", create=False)  # edged ask: fine
    fallback.chmod(0o733)  # someone made it writable for others
    with pytest.raises(ConfigError, match="not sending"):
        paths.check_socket_dir(fallback / "edged.sock", create=False)
    with pytest.raises(ConfigError, match="refusing the runtime directory"):
        paths.check_socket_dir(fallback / "edged.sock", create=True)
    paths.check_socket_dir(tmp_path / "other" / "edged.sock", create=False)  # only the fallback is checked


def test_edged_ask_refuses_plaintext_to_an_unsafe_fallback_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    from edged import cli

    fallback = tmp_path / "edged-0"
    fallback.mkdir()
    fallback.chmod(0o777)
    monkeypatch.setattr(paths, "tmp_runtime_dir", lambda: fallback)
    args = cli.build_parser().parse_args(["ask", "--socket", str(fallback / "edged.sock"), "--max-tokens", "4", "hi"])
    with pytest.raises(ConfigError, match="not sending"):
        cli.cmd_ask(args)


# ---- StrictModes for the allow-list, the trust root and versions.json ---------------------------

def test_a_group_writable_allow_list_is_refused_and_a_reload_keeps_the_old_one(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text("")
    clients.chmod(0o600)
    allow = AllowList.load(clients)
    clients.chmod(0o664)
    with pytest.raises(ConfigError, match="group-writable"):
        AllowList.load(clients)
    assert not allow.reload().ok


def test_an_allow_list_reached_through_a_writable_directory_or_symlink_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "clients.toml").write_text("")
    shared.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable"):
        AllowList.load(shared / "clients.toml")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "clients.toml").symlink_to(shared / "clients.toml")
    with pytest.raises(ConfigError, match="world-writable"):
        AllowList.load(private / "clients.toml")


def test_a_sticky_directory_like_tmp_is_accepted(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "clients.toml").write_text("")
    (sticky / "clients.toml").chmod(0o600)
    assert unsafe_reason(sticky / "clients.toml") is None


@needs_root
def test_an_allow_list_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text("")
    os.chown(clients, 1234, 1234)
    with pytest.raises(ConfigError, match="owned by uid 1234"):
        AllowList.load(clients)


def test_a_rewritable_trust_root_and_versions_file_are_refused(tmp_path: Path) -> None:
    from edged.fleet.manifest import ReleaseVerifier
    from edged.fleet.trust import ExpiryClock, TrustStore

    store = TrustStore(tmp_path, ExpiryClock(policy="trust_local"))
    store.path.parent.mkdir(parents=True)
    store.path.write_bytes(b"{}")
    store.path.chmod(0o666)
    with pytest.raises(ConfigError, match="refusing the trust root"):
        store.current()
    verifier = ReleaseVerifier.__new__(ReleaseVerifier)
    verifier.versions_path = tmp_path / "trust" / "versions.json"
    verifier.versions_path.write_text("{}")
    verifier.versions_path.chmod(0o646)
    with pytest.raises(UpdateError, match="refusing") as refused:
        verifier._load_state()
    assert refused.value.reason == "state"


# ---- idle and stalled connections --------------------------------------------------------------

def test_no_first_byte_within_the_idle_timeout_is_an_idle_connection() -> None:
    async def run() -> None:
        await read_frame(asyncio.StreamReader(), idle_timeout_s=0.05)

    with pytest.raises(IdleConnection):
        asyncio.run(run())


def test_three_bytes_of_the_length_then_nothing_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "FRAME_BODY_TIMEOUT_S", 0.05)

    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x00\x00\x00")
        await read_frame(reader, idle_timeout_s=10)

    with pytest.raises(framing.BadRequest, match="not complete within"):
        asyncio.run(run())


class _Control:
    """Just enough of DeviceControl for the socket's `status` op."""

    def status(self) -> dict[str, object]:
        return {"ok": True}

    def override_profile(self, name: str, source: str) -> dict[str, object]:
        return {}

    def prekey_reply(self) -> dict[str, str]:
        return {}

    def model_name(self) -> str:
        return "m"


async def _transport(tmp_path: Path, exempt: set[int]) -> UnixSocketTransport:
    unix = UnixSocketTransport(tmp_path / "s.sock", core=None, mode=0o600, max_frame=4096,  # type: ignore[arg-type]
                               max_connections=64, max_connections_per_uid=3, plaintext_uids=set(),
                               plaintext_gids=set(), control=_Control())
    unix._exempt_uids = exempt
    await unix.start()
    return unix


async def _first_reply(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(4096), 10)


def test_one_uid_cannot_take_every_slot_and_root_always_gets_in(tmp_path: Path) -> None:
    async def run() -> tuple[bytes, bytes]:
        unix = await _transport(tmp_path, exempt=set())  # root counts like anyone here
        held = [await asyncio.open_unix_connection(str(unix.path)) for _ in range(3)]
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_unix_connection(str(unix.path))
        refused = await _first_reply(reader)
        writer.close()
        unix._exempt_uids = {os.geteuid()}  # now as root: exempt from both caps
        reader, writer = await asyncio.open_unix_connection(str(unix.path))
        writer.write(framing.encode_json(framing.KIND_CONTROL, {"op": "status"}))
        answered = await _first_reply(reader)
        writer.close()
        for _, w in held:
            w.close()
        await unix.stop_listening()
        await unix.close_connections()
        return refused, answered

    refused, answered = asyncio.run(run())
    assert b"busy" in refused and b"3 connections" in refused
    assert b'"ok":true' in answered


def test_idle_connections_are_closed_and_free_their_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(framing, "FRAME_IDLE_TIMEOUT_S", 0.2)

    async def run() -> tuple[list[bytes], bytes]:
        unix = await _transport(tmp_path, exempt=set())
        held = [await asyncio.open_unix_connection(str(unix.path)) for _ in range(3)]
        ends = [await asyncio.wait_for(r.read(), 10) for r, _ in held]  # EOF: closed for being idle
        reader, writer = await asyncio.open_unix_connection(str(unix.path))
        writer.write(encode_json(framing.KIND_CONTROL, {"op": "status"}))
        answered = await _first_reply(reader)
        writer.close()
        await unix.stop_listening()
        await unix.close_connections()
        return ends, answered

    ends, answered = asyncio.run(run())
    assert ends == [b"", b"", b""]
    assert b'"ok":true' in answered
