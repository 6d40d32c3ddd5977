"""`edged keys ...` sub-commands, driven through their own argparse registration."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import pytest

from edged.commands import keys
from edged.crypto.allowlist import read_allow_list_file
from edged.crypto.keys import DeviceIdentity, load_private_key_file


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edged")
    keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", *argv])
    return int(args.func(args))


def test_init_then_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert run("init", "--state-dir", str(state)) == 0
    created = capsys.readouterr().out
    identity = DeviceIdentity.load(state)
    assert "(created)" in created and identity.fingerprint in created
    assert run("init", "--state-dir", str(state)) == 0
    assert "exists, kept" in capsys.readouterr().out
    assert run("show", "--state-dir", str(state)) == 0
    shown = capsys.readouterr().out
    assert f"fingerprint: {identity.fingerprint}" in shown
    assert f"public_key: {identity.public_bytes.hex()}" in shown


def test_show_without_identity_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("show", "--state-dir", str(tmp_path)) == 1
    assert "edged keys init" in capsys.readouterr().err


def test_init_refuses_a_world_readable_identity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    DeviceIdentity.load_or_create(tmp_path)
    DeviceIdentity.path_in(tmp_path).chmod(0o644)
    assert run("init", "--state-dir", str(tmp_path)) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_client_new_writes_0600_and_prints_the_public_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "client.key"
    assert run("client-new", "--out", str(out)) == 0
    printed = capsys.readouterr().out.strip()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert load_private_key_file(out).public_key().public_bytes_raw().hex() == printed
    assert run("client-new", "--out", str(out)) == 1
    assert "--force" in capsys.readouterr().err
    assert run("client-new", "--out", str(out), "--force") == 0
    assert capsys.readouterr().out.strip() != printed


def test_allow_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path)
    run("client-new", "--out", str(tmp_path / "c.key"))
    public = capsys.readouterr().out.strip()
    assert run("allow", "add", "--state-dir", state, "--label", "laptop", "--public-key", public,
               "--response-prefix", "edged/clients/laptop", "--expires", "2030-01-01T00:00:00Z", "--rpm", "20") == 0
    entry = read_allow_list_file(tmp_path / "clients.toml").clients[0]
    assert (entry.label, entry.public_key, entry.requests_per_minute) == ("laptop", public, 20)
    capsys.readouterr()
    assert run("allow", "list", "--state-dir", state) == 0
    listing = capsys.readouterr().out
    assert "laptop" in listing and public in listing and "edged/clients/laptop" in listing
    assert run("allow", "remove", "--state-dir", state, "--public-key", public) == 0
    assert read_allow_list_file(tmp_path / "clients.toml").clients == []
    assert run("allow", "remove", "--state-dir", state, "--label", "laptop") == 1
    assert "no client" in capsys.readouterr().err


@pytest.mark.parametrize("extra,needle", [
    (["--public-key", "abcd", "--response-prefix", "x"], "--public-key"),
    (["--public-key", "ab" * 32, "--response-prefix", "x/+"], "--response-prefix"),
    (["--public-key", "ab" * 32, "--response-prefix", "x", "--rpm", "0"], "--rpm"),
    (["--public-key", "ab" * 32, "--response-prefix", "x", "--expires", "2030-01-01"], "UTC offset"),
    (["--public-key", "ab" * 32, "--response-prefix", "x", "--expires", "soon"], "--expires"),
])
def test_allow_add_explains_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                      needle: str) -> None:
    clients = tmp_path / "c.toml"
    assert run("allow", "add", "--clients", str(clients), "--label", "x", *extra) == 1
    assert needle in capsys.readouterr().err
    assert not clients.exists()


def test_allow_list_of_a_broken_file_fails_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text("[[clients]]\nlabel = 3\n")
    assert run("allow", "list", "--clients", str(clients)) == 1
    assert "clients[0].label" in capsys.readouterr().err


def test_default_state_dir_comes_from_edged_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import edged.paths

    monkeypatch.setattr(edged.paths, "default_state_dir", lambda: tmp_path / "systemd-state")
    assert run("init") == 0
    assert (tmp_path / "systemd-state" / "identity.key").exists()
