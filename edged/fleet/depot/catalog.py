"""The depot's catalogue: signed releases in ``KEYS/releases/`` matched, by SHA-256, to files in the models dir."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from edged.errors import ConfigError, UpdateError
from edged import atomic
from edged.fleet.hashing import sha256_file
from edged.fleet import dsse
from edged.fleet.artifacts import layout_of
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import RELEASE_PAYLOAD_TYPE, ReleaseManifest, parse_manifest

logger = structlog.get_logger(__name__)

MISS_TTL_S: Final = 10.0  # an unknown release is looked up again after this: it may have been signed since


@dataclass
class ServedArtifact:
    """One artifact of one signed release, open for reading chunks."""

    channel: str
    version: int
    name: str
    size: int
    sha256: str
    chunk_size: int
    path: Path
    fd: int

    @property
    def chunk_count(self) -> int:
        return (self.size + self.chunk_size - 1) // self.chunk_size

    def read(self, index: int) -> bytes:
        offset = index * self.chunk_size
        return os.pread(self.fd, min(self.chunk_size, self.size - offset), offset)


class ReleaseCatalog:
    """Serves only bytes whose size and SHA-256 a release signed by the fleet's current root names.

    The models directory holds the released files under any name (the artifact name is tried
    first: for an ONNX release ``<directory>/<path>``, so the directory is copied in as it is); each
    candidate is hashed once and remembered by inode, size and mtime.
    """

    def __init__(self, keys_dir: Path, models_dir: Path) -> None:
        self.keys = OperatorKeys(keys_dir)
        self.releases_dir = keys_dir / "releases"
        self.models_dir = models_dir
        if not models_dir.is_dir():
            raise ConfigError(f"{models_dir} is not a directory")
        self.keys.current_root()  # fail at start, not at the first request, on a wrong --dir
        self._lock = threading.Lock()
        self._served: dict[tuple[str, int, str], ServedArtifact] = {}
        self._misses: dict[tuple[str, int, str], tuple[float, str]] = {}
        self._hashes: dict[tuple[int, int, int, int], str] = {}

    def manifests(self) -> list[ReleaseManifest]:
        """Every release in ``KEYS/releases/`` whose signature checks out (for the start-up log)."""
        found = []
        for path in sorted(self.releases_dir.glob("*.json")):
            try:
                found.append(self._verified(path))
            except UpdateError as exc:
                logger.warning("depot release unusable", file=path.name, reason=exc.reason)
        return found

    def lookup(self, channel: str, version: int, name: str) -> ServedArtifact:
        key = (channel, version, name)
        with self._lock:
            served = self._served.get(key)
            if served is not None:
                return served
            miss = self._misses.get(key)
            if miss is not None and time.monotonic() - miss[0] < MISS_TTL_S:
                raise UpdateError("unavailable", miss[1])
            try:
                served = self._open(channel, version, name)
            except UpdateError as exc:
                self._misses[key] = (time.monotonic(), str(exc))
                raise
            self._served[key] = served
        logger.info("depot serving", channel=channel, version=version, artifact=name, file=str(served.path))
        return served

    def close(self) -> None:
        with self._lock:
            for served in self._served.values():
                os.close(served.fd)
            self._served.clear()

    def _verified(self, path: Path) -> ReleaseManifest:
        try:
            envelope = atomic.read_bounded(path, dsse.MAX_ENVELOPE_BYTES)
        except OSError:
            raise UpdateError("unavailable", f"cannot read {path.name}") from None
        try:
            root = self.keys.current_root()
        except ConfigError as exc:
            raise UpdateError("trust_root", str(exc)) from None
        payload = dsse.verify(envelope, RELEASE_PAYLOAD_TYPE, root.release.key_map(), root.release.threshold)
        return parse_manifest(payload)

    def _open(self, channel: str, version: int, name: str) -> ServedArtifact:
        path = self.releases_dir / f"{channel}-{version}.json"
        if not path.is_file():
            raise UpdateError("unavailable", f"no signed release {channel} v{version} at this depot")
        manifest = self._verified(path)
        if (manifest.channel, manifest.version) != (channel, version):
            raise UpdateError("unavailable", f"{path.name} holds {manifest.channel} v{manifest.version}")
        try:
            layout_of(manifest.artifacts)  # never let a listing's path lead outside the models directory
        except UpdateError as exc:
            raise UpdateError("unavailable", f"{path.name}: {exc}") from None
        artifact = next((a for a in manifest.artifacts if a.name == name), None)
        if artifact is None:
            raise UpdateError("unavailable", f"{channel} v{version} has no artifact {name!r}")
        for candidate in self._candidates(name, artifact.size):
            if self._sha256(candidate) == artifact.sha256:
                fd = os.open(candidate, os.O_RDONLY)
                return ServedArtifact(
                    channel, version, name, artifact.size, artifact.sha256, manifest.chunk_size, candidate, fd
                )
        raise UpdateError("unavailable", f"no file in the depot's models dir has the bytes of {name}")

    def _candidates(self, name: str, size: int) -> list[Path]:
        named = self.models_dir / name
        others = sorted(p for p in self.models_dir.iterdir() if p != named and p.is_file())
        return [p for p in [named, *others] if p.is_file() and p.stat().st_size == size]

    def _sha256(self, path: Path) -> str:
        stat = path.stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._hashes.get(key)
        if cached is not None:
            return cached
        started = time.monotonic()
        self._hashes[key] = sha256_file(path)[1]
        logger.info("depot hashed", file=path.name, seconds=round(time.monotonic() - started, 2))
        return self._hashes[key]
