"""The one bounded TOML reader and the one strict base, as every file-reading boundary uses them."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from edged.config import load_config
from edged.crypto.allowlist import read_allow_list_file
from edged.errors import ConfigError
from edged.power.profiles import load_profile
from edged.validation import StrictModel, read_toml

READERS = {
    "config": lambda path: load_config(path, environ={}),
    "profile": load_profile,
    "allow-list": read_allow_list_file,
}
BROKEN = [
    (b"[section\n", "TOML syntax error"),
    (b"name = \"\xff\"\n", "not UTF-8 text"),
    (b"# padding\n" * 500_000, "larger than"),  # 5 MB: past every reader's limit (the largest, 4 MiB)
]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("content", "words"), BROKEN)
def test_every_toml_reader_refuses_a_broken_file_in_the_same_words(tmp_path: Path, reader: str, content: bytes,
                                                                    words: str):
    path = tmp_path / "eco.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        READERS[reader](path)
    assert str(caught.value).startswith(f"{path}: {words}")


def test_an_unreadable_file_names_the_os_reason(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cannot read: Is a directory"):
        read_toml(tmp_path, 1024)


def test_the_limit_is_inclusive(tmp_path: Path):
    path = tmp_path / "exact.toml"
    path.write_bytes(b"a = 1\n" + b"#" * 1017 + b"\n")
    assert read_toml(path, 1024) == {"a": 1}
    path.write_bytes(path.read_bytes() + b"#")
    with pytest.raises(ConfigError, match="larger than 1 KiB"):
        read_toml(path, 1024)


class Sample(StrictModel):
    count: int


def test_strict_model_refuses_coercion_unknown_fields_and_mutation():
    with pytest.raises(ValidationError):
        Sample.model_validate({"count": "1"})
    with pytest.raises(ValidationError):
        Sample.model_validate({"count": 1, "extra": True})
    sample = Sample(count=1)
    with pytest.raises(ValidationError):
        sample.count = 2  # type: ignore[misc]


def test_no_model_repeats_the_strict_config():
    """Boundary models derive from StrictModel; a local copy of its ConfigDict would drift from it."""
    root = Path(__file__).resolve().parents[2] / "edged"
    copies = [str(path.relative_to(root)) for path in root.rglob("*.py")
              if 'extra="forbid"' in path.read_text() and path.name != "validation.py"]
    assert copies == []
