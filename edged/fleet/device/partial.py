"""A resumable download: a pre-allocated ``<name>.partial`` file and its ``<name>.bitmap`` of received chunks."""

from __future__ import annotations

import base64
import errno
import os
from pathlib import Path
from typing import Final

import structlog
from pydantic import Field, ValidationError

from edged.errors import UpdateError
from edged import atomic
from edged.fleet.hashing import sha256_file
from edged.fleet import dsse
from edged.fleet.manifest import Artifact
from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

PARTIAL_SUFFIX: Final = ".partial"
BITMAP_SUFFIX: Final = ".bitmap"
# posix_fallocate errors that mean "this file system cannot", not "there is no room".
NO_FALLOCATE: Final = frozenset({errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL})


class BitmapFile(StrictModel):
    """``<name>.bitmap``: which chunks of which download are safely on disk."""

    manifest: str = Field(pattern=r"^[0-9a-f]{64}$", description="payload hash of the manifest being downloaded")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the artifact's SHA-256")
    size: int = Field(ge=1, description="the artifact's size")
    chunk_size: int = Field(ge=1, description="chunk size")
    bits: str = Field(description="base64 of the bitmap, chunk i = bit (i % 8) of byte i // 8")


class PartialDownload:
    """Chunks are written in place with pwrite; durability comes in batches by ``sync()``.

    Order matters for a power cut: the data is fsynced before the bitmap that claims it is written,
    so the bitmap may under-report (those chunks are fetched again) but never over-report.
    """

    def __init__(self, directory: Path, artifact: Artifact, chunk_size: int, manifest_sha256: str) -> None:
        self.artifact = artifact
        self.chunk_size = chunk_size
        self.manifest_sha256 = manifest_sha256
        # An ONNX file's name is a relative path ("<directory>/<file>"): its work files sit beside it.
        self.final_path = directory / artifact.name
        self.partial_path = directory / f"{artifact.name}{PARTIAL_SUFFIX}"
        self.bitmap_path = directory / f"{artifact.name}{BITMAP_SUFFIX}"
        self.chunk_count = (artifact.size + chunk_size - 1) // chunk_size
        self._bits = bytearray((self.chunk_count + 7) // 8)
        self.received = 0
        self._fd: int | None = None
        self._dirty = False

    @property
    def work_files(self) -> set[str]:
        return {self.partial_path.name, self.bitmap_path.name}

    def open(self) -> int:
        """Resume a matching earlier download or start a new one; returns the chunks already on disk."""
        if not self._resume():
            self.partial_path.unlink(missing_ok=True)
            self.bitmap_path.unlink(missing_ok=True)
            self._bits = bytearray(len(self._bits))
            self.received = 0
            # O_NOFOLLOW: a symlink planted in the slot must not redirect the download elsewhere.
            fd = os.open(self.partial_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                self._reserve(fd)
                os.fsync(fd)
            except OSError as exc:
                # A half-reserved file would keep the state file system full: it goes at once.
                os.close(fd)
                self.partial_path.unlink(missing_ok=True)
                raise UpdateError("disk", f"cannot reserve {self.artifact.size} bytes for {self.artifact.name}: "
                                          f"{exc.strerror or exc}; free space in the state directory") from None
            self._fd = fd
            self._write_bitmap()
            atomic.fsync_directory(self.partial_path.parent)
        logger.info("download opened", artifact=self.artifact.name, chunks=self.chunk_count, on_disk=self.received)
        return self.received

    def _reserve(self, fd: int) -> None:
        """Reserve the space now: a full disk shows up before the download, not at 99 %."""
        try:
            os.posix_fallocate(fd, 0, self.artifact.size)
        except OSError as exc:
            if exc.errno not in NO_FALLOCATE:
                raise  # ENOSPC, EDQUOT, EIO: the disk said no
            os.ftruncate(fd, self.artifact.size)  # a file system without fallocate: sparse, checked by writes

    def _resume(self) -> bool:
        try:
            data = atomic.read_bounded(self.bitmap_path, 4 * len(self._bits) + 4096)
            saved = BitmapFile.model_validate(dsse.loads_strict(data, "bitmap"))
            bits = dsse.decode_base64(saved.bits, "bitmap bits")
        except FileNotFoundError:
            return False
        except (UpdateError, ValidationError):
            logger.warning("download bitmap damaged", path=str(self.bitmap_path))
            return False
        expected = (self.manifest_sha256, self.artifact.sha256, self.artifact.size, self.chunk_size)
        if (saved.manifest, saved.sha256, saved.size, saved.chunk_size) != expected or len(bits) != len(self._bits):
            return False  # the bitmap of another release: its chunks are not ours
        try:
            fd = os.open(self.partial_path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError:  # ELOOP: a symlink where the partial file should be; start afresh (it is unlinked)
            return False
        if os.fstat(fd).st_size != self.artifact.size:
            os.close(fd)
            return False
        self._fd = fd
        self._bits = bytearray(bits)
        self.received = sum(1 for index in range(self.chunk_count) if self.has(index))
        return True

    def has(self, index: int) -> bool:
        return bool(self._bits[index >> 3] & (1 << (index & 7)))

    def missing(self) -> list[int]:
        return [index for index in range(self.chunk_count) if not self.has(index)]

    def expected_length(self, index: int) -> int:
        return min(self.chunk_size, self.artifact.size - index * self.chunk_size)

    @property
    def complete(self) -> bool:
        return self.received == self.chunk_count

    @property
    def bytes_done(self) -> int:
        if self.complete:
            return self.artifact.size
        return self.received * self.chunk_size

    def write(self, index: int, data: memoryview | bytes) -> None:
        """Store one checked chunk; the caller made sure index and length are right."""
        assert self._fd is not None
        if len(data) != self.expected_length(index):
            raise UpdateError("malformed", f"chunk {index} has {len(data)} bytes")  # never past the size cap
        os.pwrite(self._fd, data, index * self.chunk_size)
        self._bits[index >> 3] |= 1 << (index & 7)
        self.received += 1
        self._dirty = True

    def sync(self) -> None:
        """Make every chunk written so far durable: data first, then the bitmap."""
        if self._fd is None or not self._dirty:
            return
        os.fsync(self._fd)
        self._write_bitmap()
        self._dirty = False

    def _write_bitmap(self) -> None:
        saved = BitmapFile(
            manifest=self.manifest_sha256,
            sha256=self.artifact.sha256,
            size=self.artifact.size,
            chunk_size=self.chunk_size,
            bits=base64.b64encode(bytes(self._bits)).decode("ascii"),
        )
        atomic.write_atomic(self.bitmap_path, saved.model_dump_json().encode("utf-8"), mode=0o600)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def verify(self) -> None:
        verify_file(self.partial_path, self.artifact)

    def discard(self) -> None:
        self.close()
        self.partial_path.unlink(missing_ok=True)
        self.bitmap_path.unlink(missing_ok=True)

    def install(self) -> Path:
        """Rename the verified file to its final name in the slot (the work files go)."""
        self.close()
        final = self.final_path
        os.replace(self.partial_path, final)
        self.bitmap_path.unlink(missing_ok=True)
        atomic.fsync_directory(final.parent)
        return final


def verify_file(path: Path, artifact: Artifact) -> None:
    """Streaming SHA-256 of the whole file against the signed manifest: the check that counts."""
    # The hard size cap: never hash (or trust) more than the manifest allows.
    total, sha256 = sha256_file(path, limit=artifact.size)
    if total != artifact.size or sha256 != artifact.sha256:
        raise UpdateError("hash", f"{artifact.name}: SHA-256 or size differs from the signed manifest")
