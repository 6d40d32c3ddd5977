"""The files of one release in its slot: one resumable download per file, verified file by file, then installed.

A GGUF release is one file in the slot; an ONNX release is one directory in the slot whose files the
manifest lists by relative path. Each file has its own ``.partial`` and ``.bitmap`` beside its final
name, so a restart resumes every file where it stopped, and a file whose bytes do not match its
signed SHA-256 costs that file, not the others.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import structlog

from edged import atomic
from edged.errors import UpdateError
from edged.fleet.artifacts import ONNX_CONFIG_FILE, ReleaseLayout, layout_of
from edged.fleet.device.partial import PartialDownload, verify_file
from edged.fleet.manifest import Artifact

logger = structlog.get_logger(__name__)


def slot_entry(artifacts: Sequence[Artifact]) -> Artifact:
    """What the release puts into the slot, as the journal and the slot pointer record it.

    A GGUF release: its file. An ONNX release: the directory's name, the total size of its files and
    the SHA-256 of its sorted listing (path, size, SHA-256 of each file).
    """
    layout = layout_of(artifacts)
    return Artifact(name=layout.name, size=layout.total_size, sha256=layout.digest, format=layout.format)


class ReleaseFiles:
    """``slot/<model>.gguf`` or ``slot/<directory>/...``: the downloads of one release and their installation."""

    def __init__(self, slot_dir: Path, artifacts: Sequence[Artifact], chunk_size: int, manifest_sha256: str) -> None:
        self.slot_dir = slot_dir
        self.layout: ReleaseLayout = layout_of(artifacts)  # checked again: the journal may outlive a code change
        self.parts = [PartialDownload(slot_dir, artifact, chunk_size, manifest_sha256) for artifact in artifacts]

    @property
    def entry_path(self) -> Path:
        return self.slot_dir / self.layout.name

    def prepare(self) -> None:
        """After the slot was emptied except ``top_level_keep()``: clear the model directory but for our work files."""
        if self.layout.kind == "directory":
            self._tidy(self.entry_path, PurePosixPath(self.layout.name))
            for part in self.parts:
                part.final_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic.fsync_directory(self.slot_dir)

    def top_level_keep(self) -> set[str]:
        """The slot entries an interrupted download of this release may resume from."""
        if self.layout.kind == "directory":
            return {self.layout.name}
        return self.parts[0].work_files

    def _tidy(self, directory: Path, relative: PurePosixPath) -> None:
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            directory.unlink()  # nothing of ours is ever a symlink: a planted one must not redirect writes
            return
        if not directory.exists():
            return
        keep_files = {f"{part.artifact.name}{suffix}" for part in self.parts for suffix in (".partial", ".bitmap")}
        keep_dirs = {str(parent) for part in self.parts for parent in PurePosixPath(part.artifact.name).parents}
        with os.scandir(directory) as entries:
            for entry in entries:
                path = relative / entry.name
                if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                    if entry.is_symlink() or str(path) not in keep_files:
                        os.unlink(entry.path)
                elif str(path) in keep_dirs:
                    self._tidy(Path(entry.path), path)
                else:
                    shutil.rmtree(entry.path)
        atomic.fsync_directory(directory)

    def install(self, verify: bool) -> Path:
        """Give every verified file its final name; after a restart check each one first. Idempotent."""
        for part in self.parts:
            if part.partial_path.exists():
                if verify:
                    part.verify()
                part.install()
            elif not part.final_path.is_file() or part.final_path.is_symlink():
                raise UpdateError("state", f"{part.final_path} is missing after the download")
            elif verify:
                # Killed between this file's rename and the journal write: it was verified before the rename.
                verify_file(part.final_path, part.artifact)
        if self.layout.kind == "directory" and not (self.entry_path / ONNX_CONFIG_FILE).is_file():
            raise UpdateError("state", f"{self.entry_path} has no {ONNX_CONFIG_FILE} after staging")
        return self.entry_path

    def discard(self) -> None:
        for part in self.parts:
            part.discard()


def directory_size(path: Path) -> int | None:
    """Total bytes of the regular files under ``path``; None if anything in it is a symlink or not a file."""
    total = 0
    for root, directories, files in os.walk(path, followlinks=False):
        for name in [*directories, *files]:
            entry = Path(root) / name
            if entry.is_symlink():
                return None
        for name in files:
            entry = Path(root) / name
            if not entry.is_file():
                return None
            total += entry.stat().st_size
    return total
