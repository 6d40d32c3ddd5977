"""Profile files for integration tests: the shipped ones plus test profiles written next to them."""

from __future__ import annotations

from pathlib import Path

from edged.power.profiles import builtin_profiles_dir

TEMPLATE = """
name = "{name}"
description = "test profile"
[engine]
threads = 2
batch = 256
context = 2048
kv_cache_type = "f16"
mmap = true
mlock = false
max_tokens = {max_tokens}
[pace]
{pace}
duty_cycle = 1.0
[admission]
queue_length = {queue_length}
priorities = ["interactive", "normal", "background"]
[idle]
{idle}
[updates]
allow_downloads = true
"""


def profile_toml(name: str, *, pace: str = "", idle: str = "", queue_length: int = 4, max_tokens: int = 2000) -> str:
    return TEMPLATE.format(name=name, pace=pace, idle=idle, queue_length=queue_length, max_tokens=max_tokens)


def profiles_dir(tmp_path: Path, **extra: str) -> Path:
    """A profiles directory with the shipped profiles and `extra` ({name: toml text})."""
    directory = tmp_path / "profiles"
    directory.mkdir()
    for path in builtin_profiles_dir().glob("*.toml"):
        (directory / path.name).write_bytes(path.read_bytes())
    for name, text in extra.items():
        (directory / f"{name}.toml").write_text(text)
    return directory
