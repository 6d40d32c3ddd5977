"""What a release installs into a slot: one GGUF file, or an ONNX model directory listed file by file.

Both sides read these rules: the operator's `edged fleet release` builds listings that pass them, and
the device refuses any listing that does not, before it records the version or writes a byte.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from edged.errors import UpdateError

if TYPE_CHECKING:
    from edged.fleet.manifest import Artifact

GGUF_FORMAT: Final = "gguf"
ONNX_DIR_FORMAT: Final = "onnx-dir"
ONNX_CONFIG_FILE: Final = "edged_model.json"  # the engine's own file: without it the directory is no model
MAX_PATH_DEPTH: Final = 4  # "<directory>/<file>" up to "<directory>/a/b/<file>"
# ASCII only, no separators, no leading dot; ".." and the device's work-file suffixes are refused separately.
_SAFE_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RESERVED_SUFFIXES: Final = (".partial", ".tmp", ".bitmap")

LayoutKind = Literal["file", "directory"]


def is_safe_name(name: str) -> bool:
    """A plain file name: no path separators, no ``..``, not hidden, not one of our temp suffixes."""
    return bool(_SAFE_SEGMENT.fullmatch(name)) and ".." not in name and not name.endswith(RESERVED_SUFFIXES)


@dataclass(frozen=True)
class ReleaseLayout:
    """The checked shape of a release: the one entry it puts into a slot and the files that make it."""

    kind: LayoutKind
    name: str  # the slot entry: the GGUF file name, or the model directory's name
    files: tuple[Artifact, ...]

    @property
    def total_size(self) -> int:
        return sum(artifact.size for artifact in self.files)

    @property
    def digest(self) -> str:
        """The file's SHA-256; for a directory, the SHA-256 of its sorted listing (path, size, SHA-256)."""
        if self.kind == "file":
            return self.files[0].sha256
        return listing_digest(self.files)

    @property
    def format(self) -> str:
        return GGUF_FORMAT if self.kind == "file" else ONNX_DIR_FORMAT


def listing_digest(files: Sequence[Artifact]) -> str:
    lines = sorted(f"{a.name}\0{a.size}\0{a.sha256}\n" for a in files)
    return hashlib.sha256("".join(lines).encode("ascii")).hexdigest()


def layout_of(artifacts: Sequence[Artifact]) -> ReleaseLayout:
    """The release's layout, or UpdateError("artifact") naming the first thing wrong with the listing."""
    formats = {artifact.format for artifact in artifacts}
    if formats == {GGUF_FORMAT}:
        if len(artifacts) != 1:
            raise UpdateError("artifact", f"a GGUF release is one file, not {len(artifacts)}")
        name = artifacts[0].name
        if not is_safe_name(name):
            raise UpdateError("artifact", f"unsafe artifact name {name[:40]!r}")
        return ReleaseLayout("file", name, tuple(artifacts))
    if formats == {ONNX_DIR_FORMAT}:
        return ReleaseLayout("directory", _check_directory(artifacts), tuple(artifacts))
    raise UpdateError("artifact", f"one release installs one model: formats {sorted(f[:32] for f in formats)} "
                                  "cannot be mixed")


def _check_directory(artifacts: Sequence[Artifact]) -> str:
    """Every path is ``<directory>/<relative path>``, the same directory for all, with its edged_model.json."""
    directories: set[str] = set()
    files: set[str] = set()
    for artifact in artifacts:
        segments = split_path(artifact.name)
        directories.add(segments[0])
        folded = artifact.name.lower()  # Model.onnx and model.onnx are one file on many file systems
        if folded in files:
            raise UpdateError("artifact", f"path {artifact.name!r} appears twice (letter case does not count)")
        files.add(folded)
    if len(directories) != 1:
        raise UpdateError("artifact", f"the files of an ONNX release must share one top directory, not "
                                      f"{sorted(directories)[:4]}")
    for path in files:  # "d/a" as a file and "d/a/b" would need "d/a" to be a directory too
        parts = path.split("/")
        for depth in range(2, len(parts)):
            if "/".join(parts[:depth]) in files:
                raise UpdateError("artifact", f"{'/'.join(parts[:depth])!r} is listed as a file and as a directory")
    directory = directories.pop()
    if f"{directory}/{ONNX_CONFIG_FILE}" not in {a.name for a in artifacts}:
        raise UpdateError("artifact", f"the ONNX release has no {directory}/{ONNX_CONFIG_FILE}, so it is no edged "
                                      "model directory")
    return directory


def split_path(name: str) -> list[str]:
    """The segments of a relative artifact path, each a safe name; UpdateError("artifact") otherwise."""
    if name.startswith("/") or "\\" in name:
        raise UpdateError("artifact", f"artifact path {name[:60]!r} must be relative, with '/' between parts")
    segments = name.split("/")
    if not 2 <= len(segments) <= MAX_PATH_DEPTH:
        raise UpdateError("artifact", f"artifact path {name[:60]!r} must be <directory>/<file>, at most "
                                      f"{MAX_PATH_DEPTH} parts deep")
    for segment in segments:
        if not is_safe_name(segment):
            raise UpdateError("artifact", f"unsafe part {segment[:40]!r} in artifact path {name[:60]!r} (letters, "
                                          "digits, . _ -, no '..', no leading dot, no work-file suffix)")
    return segments
