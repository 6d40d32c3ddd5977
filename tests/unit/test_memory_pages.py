"""Idle pages given back: a read-only file mapping leaves the RSS and reads the same afterwards."""

from __future__ import annotations

import mmap
from pathlib import Path

from edged.memory import drop_mapped_pages

SIZE = 8 * 1024 * 1024


def resident_kib(path: Path) -> int:
    """Rss of the mappings of `path` in this process (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if "-" in line.split(" ", 1)[0] and len(line.split()) >= 5:
            inside = line.split()[-1] == str(path.resolve())
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_read_only_mapped_pages_leave_the_rss_and_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    with path.open("rb") as handle:
        mapped = mmap.mmap(handle.fileno(), SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    checksum = sum(mapped[i] for i in range(0, SIZE, 4096))  # touch every page
    assert resident_kib(path) >= SIZE // 1024 - 64
    assert drop_mapped_pages(path) == SIZE
    assert resident_kib(path) < 256
    assert sum(mapped[i] for i in range(0, SIZE, 4096)) == checksum  # faulted back in, unchanged
    mapped.close()


def test_writable_mappings_and_other_files_are_left_alone(tmp_path: Path) -> None:
    path, other = tmp_path / "state.bin", tmp_path / "other.gguf"
    path.write_bytes(b"x" * SIZE)
    other.write_bytes(b"y" * 4096)
    with path.open("r+b") as handle:
        mapped = mmap.mmap(handle.fileno(), SIZE, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    mapped[0:1] = b"z"
    for i in range(0, SIZE, 4096):
        mapped[i]
    assert drop_mapped_pages(path) == 0 and drop_mapped_pages(other) == 0
    assert resident_kib(path) >= SIZE // 1024 - 64
    mapped.close()


def test_an_unreadable_maps_file_drops_nothing(tmp_path: Path) -> None:
    assert drop_mapped_pages(tmp_path / "x", maps=tmp_path / "missing") == 0
