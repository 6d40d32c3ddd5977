"""The client allow-list file, its reload semantics, its editing helpers, topic rules and rate limits."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from edged.crypto.allowlist import (
    AllowList,
    ClientEntry,
    parse_allow_list,
    read_allow_list_file,
)
from edged.crypto.allowlist_edit import add_client, remove_client, render_allow_list
from edged.crypto.response_topic import response_topic_allowed
from edged.errors import ConfigError
from edged.ratelimit import RateLimiter


def _pub() -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()


KEY_A, KEY_B = _pub(), _pub()
GOOD = f"""
# comment kept
[[clients]]
label = "laptop"
public_key = "{KEY_A}"
response_prefix = "edged/clients/laptop"
requests_per_minute = 30

[[clients]]
label = "cli"
public_key = "{KEY_B.upper()}"
response_prefix = "local"
expires = 2027-01-15T08:00:00+01:00
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(text)
    return path


def test_valid_file_loads_and_looks_up(tmp_path: Path) -> None:
    allow = AllowList.load(_write(tmp_path, GOOD))
    assert len(allow) == 2
    laptop = allow.lookup(bytes.fromhex(KEY_A), 0.0)
    assert laptop is not None and laptop.label == "laptop" and laptop.requests_per_minute == 30
    cli = allow.lookup(bytes.fromhex(KEY_B), 0.0)
    assert cli is not None and cli.response_prefix == "local"
    expiry = datetime(2027, 1, 15, 7, 0, tzinfo=UTC).timestamp()
    assert allow.lookup(bytes.fromhex(KEY_B), expiry - 1) is not None
    assert allow.lookup(bytes.fromhex(KEY_B), expiry) is None
    assert allow.lookup(bytes.fromhex(_pub()), 0.0) is None


@pytest.mark.parametrize("text,needle", [
    ("[[clients]\nlabel = 1", "TOML syntax error"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\ncolour = "red"', "clients[0].colour"),
    ('[[clients]]\nlabel = "a"\npublic_key = "zz"\nresponse_prefix = "x"', "clients[0].public_key"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A[:62]}"\nresponse_prefix = "x"', "clients[0].public_key"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}00"\nresponse_prefix = "x"', "clients[0].public_key"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x/#"', "clients[0].response_prefix"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x//y"', "empty level"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\nexpires = 2027-01-01T00:00:00',
     "UTC offset"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\nexpires = 2027-01-01',
     "clients[0].expires"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\nrequests_per_minute = 0',
     "requests_per_minute"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\nrequests_per_minute = "5"',
     "requests_per_minute"),
    (f'[[clients]]\nlabel = "a b"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"', "clients[0].label"),
    (f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"', "clients[0].response_prefix"),
    ((f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\n'
      f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_B}"\nresponse_prefix = "y"'), "duplicate label"),
    ((f'[[clients]]\nlabel = "a"\npublic_key = "{KEY_A}"\nresponse_prefix = "x"\n'
      f'[[clients]]\nlabel = "b"\npublic_key = "{KEY_A.upper()}"\nresponse_prefix = "y"'), "duplicate public_key"),
    ('clients = "nope"', "clients"),
    ('version = 2', "version"),
])
def test_malformed_files_are_refused_naming_the_field(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_allow_list(text)
    assert needle in str(info.value)


def test_missing_file_is_an_empty_list(tmp_path: Path) -> None:
    allow = AllowList.load(tmp_path / "absent.toml")
    assert len(allow) == 0


def test_bad_reload_keeps_the_previous_list(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    allow = AllowList.load(path)
    path.write_text(GOOD.replace(KEY_A, "00" * 31))
    result = allow.reload()
    assert not result.ok and result.clients == 2
    assert result.error is not None and "clients[0].public_key" in result.error
    assert allow.lookup(bytes.fromhex(KEY_A), 0.0) is not None
    assert allow.reload_if_changed() is None  # the bad version is not re-read until it changes again


def test_reload_if_changed_only_reloads_on_change(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    allow = AllowList.load(path)
    assert allow.reload_if_changed() is None
    replacement = tmp_path / "new.toml"
    replacement.write_text(GOOD.split("[[clients]]")[0] + "[[clients]]" + GOOD.split("[[clients]]")[1])
    os.replace(replacement, path)  # a new inode, as editors and our own writer do
    result = allow.reload_if_changed()
    assert result is not None and result.ok and result.clients == 1
    assert allow.lookup(bytes.fromhex(KEY_B), 0.0) is None


def test_removing_the_file_revokes_everyone(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    allow = AllowList.load(path)
    path.unlink()
    result = allow.reload_if_changed()
    assert result is not None and result.ok and len(allow) == 0


def test_add_keeps_comments_and_remove_rerenders(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    path.chmod(0o640)
    new_key = _pub()
    add_client(path, ClientEntry(label="tablet", public_key=new_key, response_prefix="edged/clients/tablet",
                                 expires=datetime(2030, 1, 1, tzinfo=UTC), requests_per_minute=5))
    text = path.read_text()
    assert "# comment kept" in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    parsed = read_allow_list_file(path)
    assert [entry.label for entry in parsed.clients] == ["laptop", "cli", "tablet"]
    assert parsed.clients[2].expires == datetime(2030, 1, 1, tzinfo=UTC)
    removed = remove_client(path, public_key=KEY_B.upper())
    assert removed.label == "cli"
    assert [entry.label for entry in read_allow_list_file(path).clients] == ["laptop", "tablet"]
    assert remove_client(path, label="laptop").public_key == KEY_A
    assert [p.name for p in tmp_path.iterdir()] == ["clients.toml"]


def test_add_refuses_duplicates_and_remove_refuses_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match="exists"):
        add_client(path, ClientEntry(label="laptop", public_key=_pub(), response_prefix="x"))
    with pytest.raises(ConfigError, match="already allowed"):
        add_client(path, ClientEntry(label="other", public_key=KEY_A, response_prefix="x"))
    with pytest.raises(ConfigError, match="no client"):
        remove_client(path, label="nobody")
    assert path.read_text() == GOOD


def test_add_creates_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.toml"
    add_client(path, ClientEntry(label="x", public_key=KEY_A, response_prefix='odd "quoted" \\ prefix'))
    entry = read_allow_list_file(path).clients[0]
    assert entry.response_prefix == 'odd "quoted" \\ prefix'
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_rendering_round_trips() -> None:
    parsed = parse_allow_list(GOOD)
    assert parse_allow_list(render_allow_list(parsed)) == parsed


@pytest.mark.parametrize("topic,prefix,local,allowed", [
    ("a/b", "a/b", False, True),
    ("a/b/c", "a/b", False, True),
    ("a/bc", "a/b", False, False),
    ("a", "a/b", False, False),
    ("a/b/+", "a/b", False, False),
    ("a/b/#", "a/b", False, False),
    ("a/b//c", "a/b", False, False),
    ("a/b/", "a/b", False, False),
    ("a/b/c\u0000", "a/b", False, False),
    ("a/b/\n", "a/b", False, False),
    ("local", "local", True, True),
    ("local", "local", False, False),
    ("local/x", "local", False, False),
    ("a/b", "local", False, False),
    ("a/b", "a/b", True, False),
    ("local", "a/b", True, False),
    ("a/b/" + "x" * 600, "a/b", False, False),
])
def test_response_topic_rule(topic: str, prefix: str, local: bool, allowed: bool) -> None:
    assert (response_topic_allowed(topic, prefix, local=local) is None) is allowed


def test_rate_limiter_refills_per_minute_and_is_per_client() -> None:
    limiter = RateLimiter()
    assert all(limiter.allow(b"a", 3, 0.0) for _ in range(3))
    assert not limiter.allow(b"a", 3, 0.0)
    assert limiter.allow(b"b", 3, 0.0)
    assert not limiter.allow(b"a", 3, 19.0)
    assert limiter.allow(b"a", 3, 20.0)
    assert limiter.allow(b"a", None, 20.0)
    assert not limiter.allow(b"a", 3, 5.0)  # a clock stepping back mints nothing


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = RateLimiter(max_clients=8)
    for index in range(100):
        limiter.allow(index.to_bytes(4, "big"), 10, float(index))
    assert len(limiter) == 8


@pytest.mark.parametrize("written", ["edged/clients/laptop/", "edged/clients/laptop//"])
def test_a_trailing_slash_on_a_response_prefix_is_normalised(written: str):
    entry = ClientEntry(label="laptop", public_key=KEY_A, response_prefix=written)
    assert entry.response_prefix == "edged/clients/laptop"
    assert response_topic_allowed("edged/clients/laptop/3f2a", entry.response_prefix, local=False) is None


@pytest.mark.parametrize(("written", "advice"), [
    ("/edged/clients/laptop", "write it as 'edged/clients/laptop'"),
    ("edged//clients", "write it as 'edged/clients'"),
    ("/", "e.g. 'edged/clients/laptop', or 'local'"),
])
def test_a_bad_response_prefix_error_says_how_to_write_it(written: str, advice: str):
    with pytest.raises(ValidationError) as caught:
        ClientEntry(label="laptop", public_key=KEY_A, response_prefix=written)
    assert advice in str(caught.value)
