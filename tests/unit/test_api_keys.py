"""API keys for the HTTP API: `edged keys api-key`, hashed storage, the daemon-side store."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest

from edged.commands import keys
from edged.crypto.api_keys import API_KEYS_FILE, ApiKeyStore, add_key, hash_key, read_keys_file
from edged.errors import ConfigError


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="edged")
    keys.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "api-key", *argv])
    return int(args.func(args))


def test_new_prints_the_key_alone_once_and_stores_only_its_hash(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run("new", "home-assistant", "--state-dir", str(tmp_path)) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert out.out == key + "\n" and key.startswith("edk_") and len(key) >= 40
    assert key not in out.err
    stored = (tmp_path / API_KEYS_FILE).read_text()
    assert key not in stored and hash_key(key) in stored
    assert stat.S_IMODE((tmp_path / API_KEYS_FILE).stat().st_mode) == 0o600

    assert run("list", "--state-dir", str(tmp_path)) == 0
    listed = capsys.readouterr().out
    assert "home-assistant" in listed and key not in listed

    assert run("new", "home-assistant", "--state-dir", str(tmp_path)) == 1
    assert "exists" in capsys.readouterr().err
    assert run("revoke", "home-assistant", "--state-dir", str(tmp_path)) == 0
    assert read_keys_file(tmp_path / API_KEYS_FILE).keys == []
    assert run("revoke", "home-assistant", "--state-dir", str(tmp_path)) == 1
    assert "no key labelled" in capsys.readouterr().err


@pytest.mark.parametrize("label", ["", "_starts-with-underscore", "has space", "x" * 65, "semi;colon"])
def test_bad_labels_are_refused(tmp_path: Path, label: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("new", label, "--state-dir", str(tmp_path)) == 1
    assert "label" in capsys.readouterr().err
    assert not (tmp_path / API_KEYS_FILE).exists()


def test_list_without_keys_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("list", "--state-dir", str(tmp_path)) == 0
    assert "edged keys api-key new" in capsys.readouterr().out


def test_store_checks_and_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / API_KEYS_FILE
    store = ApiKeyStore(path)
    assert store.refresh() and len(store) == 0  # no file: no keys
    first = add_key(path, "a")
    second = add_key(path, "b")
    assert store.refresh() and store.check(first) == "a" and store.check(second) == "b"
    assert not store.refresh()  # unchanged: not re-read
    for wrong in ("", first[:-1], first + "x", "Bearer " + first, "x" * 10_000, first.upper()):
        assert store.check(wrong) is None


@pytest.mark.parametrize("content", [
    b"{not json", b"[]", b'{"version": 2, "keys": []}',
    b'{"keys": [{"label": "a", "sha256": "zz", "created": "now"}]}',
    b'{"keys": [], "extra": 1}', b"\xff\xfe", b"{}" + b" " * (2 * 1024 * 1024),
    b'{"keys": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", b'{"version": ' + b"1" * 5000 + b"}",
])
def test_a_broken_file_keeps_the_previous_keys(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / API_KEYS_FILE
    key = add_key(path, "kept")
    store = ApiKeyStore(path)
    store.refresh()
    path.write_bytes(content)
    with pytest.raises(ConfigError):
        store.refresh(force=True)
    assert store.check(key) == "kept"


def test_duplicate_hashes_or_labels_in_a_hand_edited_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / API_KEYS_FILE
    entry = {"label": "a", "sha256": "0" * 64, "created": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps({"version": 1, "keys": [entry, {**entry, "label": "b"}]}))
    with pytest.raises(ConfigError, match="duplicate"):
        read_keys_file(path)
