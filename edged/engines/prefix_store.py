"""KV state of recent prompt prefixes (system prompts, tool and schema preambles), kept on disk.

A 300-token system prompt costs seconds of prefill on a Pi. The engine keeps it in its KV cache
between requests, but a restart, a profile switch that reloads the model or an idle unload throws
that away. This store keeps the llama.cpp sequence state of such prefixes in the state dir, so the
first request after any reload starts warm.

Each entry is one file ``<key>.kv``: a magic, a JSON header (model hash, engine settings, the
prefix tokens, the blob's SHA-256) and llama.cpp's sequence state blob. The key is a hash of the
model file's SHA-256, the engine settings that shape the KV cache and the prefix tokens, so a state
is only ever offered to the model and settings that made it. Files are written crash-safely (temp,
fsync, rename) by one background thread, bounded in total bytes (least recently used go first), and
checked (header, sizes, SHA-256) before use: a corrupt or mismatched file is ignored with a log
line and removed, never handed to llama.cpp.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from edged import atomic

logger = structlog.get_logger(__name__)

MAGIC: Final = b"EDGEDKV1"
MAX_HEADER_BYTES: Final = 1 << 20
HASHES_FILE: Final = "model-hashes.json"
MIN_PREFIX_TOKENS: Final = 32  # shorter prefixes prefill faster than a file is read


@dataclass(frozen=True)
class PrefixEntry:
    key: str
    path: Path
    tokens: tuple[int, ...]
    size: int


def _header_and_blob(data: bytes | bytearray) -> tuple[dict[str, object], memoryview]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise ValueError("not an edged KV state file")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    if length > MAX_HEADER_BYTES or start + length > len(data):
        raise ValueError("header length out of range")
    header = json.loads(data[start:start + length])
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, memoryview(data)[start + length:]  # a view: a state is megabytes, copied once at most


class PrefixStore:
    """One directory of prefix states for one model file and one set of KV-shaping engine settings."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._scope = ""
        self._entries: dict[str, PrefixEntry] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._writes: queue.Queue[tuple[str, tuple[int, ...], bytes] | None] = queue.Queue(maxsize=4)
        self._writer: threading.Thread | None = None

    # ---- scope: which model and settings the entries must match ------------------------------------
    def open(self, model: Path, settings_key: str) -> None:
        """Scan the directory for entries of this model file and settings (called at every model load)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._scope = hashlib.sha256(f"{self._model_hash(model)}\n{settings_key}".encode()).hexdigest()
        entries: dict[str, PrefixEntry] = {}
        for path in sorted(self.directory.glob("*.kv")):
            entry = self._read_entry(path)
            if entry is not None:
                entries[entry.key] = entry
        with self._lock:
            self._entries = entries
        logger.info("prefix states found", entries=len(entries), bytes=sum(e.size for e in entries.values()))

    def _model_hash(self, model: Path) -> str:
        """The model file's SHA-256, remembered by path, size and mtime (hashing 100 MB at every load is slow)."""
        info = model.stat()
        stamp = f"{model.resolve()}:{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"
        known = self._read_hashes()
        if stamp in known:
            return known[stamp]
        digest = hashlib.sha256()
        with model.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        known = {stamp: digest.hexdigest(), **dict(list(known.items())[:15])}
        atomic.write_atomic(self.directory / HASHES_FILE, json.dumps(known).encode(), mode=0o600)
        return known[stamp]

    def _read_hashes(self) -> dict[str, str]:
        try:
            data = json.loads(atomic.read_bounded(self.directory / HASHES_FILE, 64 * 1024))
        except (OSError, ValueError):
            return {}
        return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} \
            if isinstance(data, dict) else {}

    def key_of(self, tokens: tuple[int, ...]) -> str:
        return hashlib.sha256(f"{self._scope}\n{','.join(map(str, tokens))}".encode()).hexdigest()[:32]

    # ---- lookup ------------------------------------------------------------------------------------
    def longest_match(self, tokens: list[int], at_least: int) -> PrefixEntry | None:
        """The stored prefix of ``tokens`` with the most tokens, if it has more than ``at_least``."""
        best: PrefixEntry | None = None
        with self._lock:
            candidates = list(self._entries.values())
        for entry in candidates:
            n = len(entry.tokens)
            if n > at_least and n < len(tokens) and (best is None or n > len(best.tokens)) \
                    and tuple(tokens[:n]) == entry.tokens:
                best = entry
        return best

    def most_recent(self, shorter_than: int | None = None) -> PrefixEntry | None:
        """The newest entry (of fewer than ``shorter_than`` tokens: one that fits the context)."""
        with self._lock:
            entries = [e for e in self._entries.values() if shorter_than is None or len(e.tokens) < shorter_than]
        if not entries:
            return None
        return max(entries, key=lambda e: self._mtime(e.path))

    def has(self, tokens: tuple[int, ...]) -> bool:
        key = self.key_of(tokens)
        with self._lock:
            return key in self._entries or key in self._pending

    def load_blob(self, entry: PrefixEntry) -> memoryview | None:
        """The verified state blob of ``entry`` (a writable view, so ctypes can use it in place), or None (and
        the file removed) when it does not check out."""
        try:
            with entry.path.open("rb") as handle:  # read once into a buffer ctypes can use in place
                data = bytearray(os.fstat(handle.fileno()).st_size)
                del data[handle.readinto(data):]
            header, blob = _header_and_blob(data)
            if header.get("scope") != self._scope or header.get("tokens") != list(entry.tokens) \
                    or header.get("blob_sha256") != hashlib.sha256(blob).hexdigest():
                raise ValueError("contents do not match the header")
        except (OSError, ValueError) as exc:
            self.discard(entry, f"{type(exc).__name__}: {exc}")
            return None
        try:
            os.utime(entry.path)  # least recently used is evicted first
        except OSError:
            pass
        return blob

    def _read_entry(self, path: Path) -> PrefixEntry | None:
        try:
            with path.open("rb") as handle:
                head = handle.read(len(MAGIC) + 4)
                if len(head) < len(MAGIC) + 4 or not head.startswith(MAGIC):
                    raise ValueError("not an edged KV state file")
                (length,) = struct.unpack_from("<I", head, len(MAGIC))
                if length > MAX_HEADER_BYTES:
                    raise ValueError("header length out of range")
                header = json.loads(handle.read(length))
            tokens = tuple(int(t) for t in header["tokens"])
            size = path.stat().st_size
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("prefix state ignored", file=path.name, error=f"{type(exc).__name__}: {exc}")
            return None
        if header.get("scope") != self._scope:
            return None  # another model or other settings: kept for them until evicted
        if path.stem != self.key_of(tokens):
            logger.warning("prefix state ignored", file=path.name, error="name does not match its contents")
            return None
        return PrefixEntry(key=path.stem, path=path, tokens=tokens, size=size)

    def discard(self, entry: PrefixEntry, why: str) -> None:
        logger.warning("prefix state ignored", file=entry.path.name, error=why)
        with self._lock:
            self._entries.pop(entry.key, None)
        try:
            entry.path.unlink()
        except OSError:
            pass

    # ---- saving (off the model thread) ---------------------------------------------------------------
    def save(self, tokens: tuple[int, ...], blob: bytes) -> None:
        """Queue ``blob`` (llama.cpp's state of exactly ``tokens``) to be written; dropped when the queue is full.

        Runs on the model thread, between prefill steps: hashing and framing the megabytes of state is
        left to the writer thread.
        """
        key = self.key_of(tokens)
        if len(blob) > self.max_bytes:
            return
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_forever, name="edged-prefix-writer", daemon=True)
            self._writer.start()
        try:
            self._writes.put_nowait((key, tokens, blob))
        except queue.Full:
            with self._lock:
                self._pending.discard(key)

    def _write_forever(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:  # close(): everything queued before it is written
                self._writes.task_done()
                return
            key, tokens, blob = item
            try:
                self._write(key, tokens, blob)
            except OSError as exc:
                logger.warning("prefix state not saved", error=str(exc))
            finally:
                with self._lock:
                    self._pending.discard(key)
                self._writes.task_done()

    def _write(self, key: str, tokens: tuple[int, ...], blob: bytes) -> None:
        header = json.dumps({"scope": self._scope, "tokens": list(tokens),
                             "blob_sha256": hashlib.sha256(blob).hexdigest()}).encode()
        data = MAGIC + struct.pack("<I", len(header)) + header + blob
        if len(data) > self.max_bytes:
            return
        entry = PrefixEntry(key=key, path=self.directory / f"{key}.kv", tokens=tokens, size=len(data))
        atomic.write_atomic(entry.path, data, mode=0o600)
        with self._lock:
            self._entries[entry.key] = entry  # offered only once it is whole on disk
        self._evict()
        logger.info("prefix state saved", tokens=len(entry.tokens), bytes=len(data))

    def flush(self) -> None:
        """Wait until queued states are on disk (tests, and before an unload)."""
        self._writes.join()

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued, then end the writer thread (at shutdown)."""
        writer = self._writer
        if writer is not None and writer.is_alive():
            self._writes.put(None)
            writer.join(timeout_s)
        self._writer = None

    def _evict(self) -> None:
        files = sorted(self.directory.glob("*.kv"), key=self._mtime, reverse=True)
        total = 0
        for path in files:
            try:
                size = path.stat().st_size
            except OSError:
                continue
            total += size
            if total > self.max_bytes:
                with self._lock:
                    self._entries.pop(path.stem, None)
                path.unlink(missing_ok=True)

    @staticmethod
    def _mtime(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0
