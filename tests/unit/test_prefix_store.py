"""The prefix store: states are offered only to their model and settings, checked before use, bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edged.engines.prefix_store import MAGIC, PrefixStore

TOKENS = tuple(range(100, 164))


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + os.urandom(4096))
    return path


def opened(tmp_path: Path, model: Path, settings: str = "s", max_bytes: int = 1 << 20) -> PrefixStore:
    store = PrefixStore(tmp_path / "prefix-cache", max_bytes)
    store.open(model, settings)
    return store


def test_a_saved_state_comes_back_for_the_same_model_and_settings(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model)
    store.save(TOKENS, b"state-bytes" * 100)
    store.flush()
    again = opened(tmp_path, model)
    entry = again.longest_match([*TOKENS, 1, 2, 3], at_least=0)
    assert entry is not None and entry.tokens == TOKENS
    assert again.load_blob(entry) == b"state-bytes" * 100
    assert again.most_recent() == entry


def test_other_settings_or_another_model_never_see_it(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model)
    store.save(TOKENS, b"x" * 64)
    store.flush()
    assert opened(tmp_path, model, settings="other").most_recent() is None
    other = tmp_path / "other.gguf"
    other.write_bytes(b"GGUF" + os.urandom(4096))
    assert opened(tmp_path, other).most_recent() is None


def test_a_match_must_be_a_strict_prefix_longer_than_what_is_cached(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model)
    store.save(TOKENS, b"x" * 64)
    store.flush()
    assert store.longest_match(list(TOKENS), at_least=0) is None  # the last token must still be decoded
    assert store.longest_match([*TOKENS, 9], at_least=len(TOKENS)) is None
    assert store.longest_match([7, *TOKENS, 9], at_least=0) is None


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic", "header-length", "empty"])
def test_a_damaged_file_is_ignored_and_removed(tmp_path: Path, model: Path, damage: str) -> None:
    store = opened(tmp_path, model)
    store.save(TOKENS, os.urandom(2048))
    store.flush()
    (path,) = (tmp_path / "prefix-cache").glob("*.kv")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-10] ^= 0x40
    elif damage == "truncate":
        data = data[:-100]
    elif damage == "magic":
        data[:len(MAGIC)] = b"NOTMAGIC"
    elif damage == "header-length":
        data[len(MAGIC):len(MAGIC) + 4] = (1 << 31).to_bytes(4, "little")
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    again = opened(tmp_path, model)
    entry = again.longest_match([*TOKENS, 1], at_least=0)
    if entry is not None:  # the header still reads: the blob check refuses it
        assert again.load_blob(entry) is None
        assert not path.exists()
    assert again.longest_match([*TOKENS, 1], at_least=0) is None


def test_a_renamed_file_is_not_trusted(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model)
    store.save(TOKENS, b"x" * 64)
    store.flush()
    (path,) = (tmp_path / "prefix-cache").glob("*.kv")
    path.rename(path.with_name("0" * 32 + ".kv"))
    assert opened(tmp_path, model).most_recent() is None


def test_the_store_is_bounded_in_bytes_least_recently_used_first(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model, max_bytes=5000)
    for i in range(4):
        store.save(tuple(range(i * 1000, i * 1000 + 40)), bytes([i]) * 1500)
        store.flush()
        time.sleep(0.02)  # distinct mtimes
    files = list((tmp_path / "prefix-cache").glob("*.kv"))
    assert sum(f.stat().st_size for f in files) <= 5000 and len(files) < 4
    newest = opened(tmp_path, model, max_bytes=5000).most_recent()
    assert newest is not None and newest.tokens[0] == 3000


def test_a_state_larger_than_the_bound_is_not_written(tmp_path: Path, model: Path) -> None:
    store = opened(tmp_path, model, max_bytes=1000)
    store.save(TOKENS, b"x" * 5000)
    store.flush()
    assert not list((tmp_path / "prefix-cache").glob("*.kv"))


def test_close_writes_what_is_queued_and_ends_the_writer_thread(tmp_path: Path, model: Path) -> None:
    import threading

    store = opened(tmp_path, model)
    store.close()  # nothing was ever saved: no writer to end
    before = set(threading.enumerate())  # other tests' stores may still have theirs
    store.save(TOKENS, b"state-bytes" * 100)
    writers = [t for t in set(threading.enumerate()) - before if t.name == "edged-prefix-writer"]
    store.close()
    assert writers and not any(t.is_alive() for t in writers)
    entry = opened(tmp_path, model).longest_match([*TOKENS, 1], at_least=0)
    assert entry is not None and entry.tokens == TOKENS  # the queued state reached the disk first
    store.save(tuple(range(200, 264)), b"more" * 100)  # a save after close starts a new writer
    store.flush()
    assert opened(tmp_path, model).longest_match([*range(200, 264), 1], at_least=0) is not None
    store.close()
