"""Bounded reads of sysfs/procfs attributes relative to one movable root (default ``/``)."""

from __future__ import annotations

import re
from pathlib import Path

from edged.errors import SensorError

# A sysfs attribute is at most one page; anything larger is not the file we think it is.
MAX_ATTRIBUTE_BYTES = 4096
# /proc/stat on a many-core box is a few KiB per 64 CPUs; cap it well above that.
MAX_PROC_BYTES = 256 * 1024


def _read_bytes(path: Path, limit: int) -> bytes:
    """Read at most ``limit + 1`` bytes so callers can tell an oversized file from a full one."""
    with open(path, "rb") as handle:
        return handle.read(limit + 1)


def _natural_key(path: Path) -> list[int | str]:
    # hwmon10 must sort after hwmon9, thermal_zone10 after thermal_zone2.
    return [int(part) if part.isdecimal() else part for part in re.split(r"(\d+)", path.name)]


class SysfsRoot:
    """Every sensor file is reached through this, so tests can point the real readers at a fake tree.

    Missing files read as ``None`` (an optional attribute is simply absent). A file that exists but
    cannot be read, is too large, is not text or does not parse raises ``SensorError``.
    """

    def __init__(self, root: Path | str = "/") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self.root)!r})"

    def path(self, location: Path | str) -> Path:
        """Map ``/sys/...``, ``sys/...`` or a path already under the root onto the root."""
        candidate = Path(location)
        if candidate.is_absolute():
            if candidate == self.root or self.root in candidate.parents:
                return candidate
            candidate = candidate.relative_to("/")
        if ".." in candidate.parts:
            raise SensorError(f"refusing a sensor path that leaves the root: {location}")
        return self.root / candidate

    def exists(self, location: Path | str) -> bool:
        return self.path(location).exists()

    def glob(self, directory: Path | str, pattern: str) -> list[Path]:
        """Entries of ``directory`` matching ``pattern``, in natural order; empty when absent."""
        base = self.path(directory)
        if not base.is_dir():
            return []
        return sorted(base.glob(pattern), key=_natural_key)

    def read_text(self, location: Path | str, limit: int = MAX_ATTRIBUTE_BYTES) -> str | None:
        """The stripped text of one attribute, ``None`` when the file does not exist."""
        path = self.path(location)
        try:
            data = _read_bytes(path, limit)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise SensorError(f"{path}: permission denied (see docs on sensor access groups)") from exc
        except OSError as exc:
            # sysfs answers EIO/ENODATA/EINVAL for sensors that are powered down or unsupported.
            raise SensorError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        if len(data) > limit:
            raise SensorError(f"{path}: larger than {limit} bytes, not a sensor attribute")
        try:
            # Device-tree strings end in NUL; strip it along with whitespace.
            return data.decode("utf-8").strip().strip("\x00").strip()
        except UnicodeDecodeError as exc:
            raise SensorError(f"{path}: not text") from exc

    def read_int(self, location: Path | str) -> int | None:
        """One integer attribute (``-12``, ``37000``), ``None`` when the file does not exist."""
        text = self.read_text(location)
        if text is None:
            return None
        return parse_int(text, self.path(location))


def parse_int(text: str, where: Path | str) -> int:
    """Parse a decimal integer of sane length; anything else is a ``SensorError`` naming ``where``."""
    if not re.fullmatch(r"[+-]?\d{1,19}", text):
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise SensorError(f"{where}: expected an integer, got {shown!r}")
    return int(text)
