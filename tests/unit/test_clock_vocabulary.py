"""[e2e] clock_policy and [updates] clock_policy speak one vocabulary (crypto/clock.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.config import load_config
from edged.errors import ConfigError


def config(tmp_path: Path, e2e: str, updates: str):
    path = tmp_path / "edged.toml"
    path.write_text(f'[e2e]\nclock_policy = "{e2e}"\n\n[updates]\nclock_policy = "{updates}"\n')
    return load_config(path, environ={})


@pytest.mark.parametrize("word", ["reject", "trust-system-clock"])
def test_both_sections_take_the_same_words(tmp_path: Path, word: str):
    loaded = config(tmp_path, word, word)
    assert loaded.e2e.clock_policy == word
    assert loaded.updates is not None and loaded.updates.clock_policy == word
    assert loaded.updates.expiry_clock().policy == word


def test_the_defaults_are_the_same_word(tmp_path: Path):
    (tmp_path / "edged.toml").write_text("[updates]\n")
    loaded = load_config(tmp_path / "edged.toml", environ={})
    assert loaded.e2e.clock_policy == loaded.updates.clock_policy == "reject"  # type: ignore[union-attr]


@pytest.mark.parametrize(("old", "new"), [("require_sync", "reject"), ("trust_local", "trust-system-clock")])
def test_the_old_update_words_still_load_as_the_shared_ones(tmp_path: Path, old: str, new: str):
    loaded = load_config(None, environ={"EDGED_UPDATES__CLOCK_POLICY": old})
    assert loaded.updates is not None and loaded.updates.clock_policy == new


def test_an_expiry_check_is_never_skipped(tmp_path: Path):
    """accept-unsynced skips the timestamp check of a sealed request; nothing may skip a release's expiry."""
    with pytest.raises(ConfigError, match=r"updates\.clock_policy"):
        config(tmp_path, "accept-unsynced", "accept-unsynced")
    assert config(tmp_path, "accept-unsynced", "reject").e2e.clock_policy == "accept-unsynced"
