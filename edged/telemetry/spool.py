"""SQLite store-and-forward spool: persist each record (and its seq) before publish, delete it on PUBACK."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, NamedTuple, TypeVar

import structlog

from edged.telemetry import spool_db
from edged.telemetry.records import TelemetryRecord, encode_message, record_body
from edged.errors import RecordTooLarge, SpoolCorrupt, SpoolError

logger = structlog.get_logger(__name__)

MAX_RECORD_BYTES: Final = 64 * 1024  # well under broker limits (AWS IoT 128 KB, mosquitto ~2 MB)
MIN_SPOOL_BYTES: Final = 4 * 1024
MAX_SPOOL_BYTES: Final = 1024**3
MAX_PENDING_BATCH: Final = 1000
_T = TypeVar("_T")

__all__ = ["MAX_RECORD_BYTES", "RecordTooLarge", "Spool", "SpoolError", "SpoolStats", "SpooledMessage"]


class SpooledMessage(NamedTuple):
    """One record ready to publish; ``payload`` already carries ``seq`` and ``historical``."""

    seq: int
    payload: bytes
    kind: str
    time_unix_ms: int
    historical: bool


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Counters for the device record; the ``*_total`` ones persist across restarts."""

    pending: int
    pending_bytes: int
    next_seq: int
    dropped_total: int
    recoveries_total: int
    recovered_from_corruption: bool


class Spool:
    """Thread-safe: the event loop appends while paho's network thread acks. Call ``open()`` first.

    A record is *historical* when it was appended before the current connection started (or while
    there was none); the flag is written into the payload when ``pending()`` hands it out.
    """

    def __init__(self, path: Path | str, max_bytes: int, *, wall_clock: Callable[[], float] = time.time) -> None:
        if not MIN_SPOOL_BYTES <= max_bytes <= MAX_SPOOL_BYTES:
            raise ValueError(f"spool max_bytes must be within {MIN_SPOOL_BYTES}..{MAX_SPOOL_BYTES}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.record_limit = min(MAX_RECORD_BYTES, max_bytes)
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._next_seq = 1
        self._pending = 0
        self._bytes = 0
        self._dropped = 0
        self._recoveries = 0
        self._recovered = False
        self._live_from_seq: int | None = None

    def __enter__(self) -> Spool:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def recovered_from_corruption(self) -> bool:
        """True when ``open()`` or a later operation found the file corrupt and recreated it."""
        return self._recovered

    def open(self) -> None:
        """Open or create the file; a corrupt or foreign file is moved aside and replaced."""
        with self._lock:
            if self._connection is not None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SpoolError(f"{self.path}: cannot create the spool directory: {exc}") from exc
            connection: sqlite3.Connection | None = None
            try:
                connection = spool_db.connect(self.path)
                spool_db.check_or_create(connection)
            except (sqlite3.DatabaseError, SpoolCorrupt) as exc:
                if connection is not None:
                    connection.close()
                if isinstance(exc, sqlite3.DatabaseError) and not spool_db.is_corruption(exc):
                    raise SpoolError(f"{self.path}: cannot open telemetry spool: {exc}") from exc
                connection = self._recreate(str(exc))
            self._connection = connection
            self._load_counters(connection)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def connection_started(self) -> None:
        """Call on CONNACK: records appended from now on are live, everything older is historical."""
        with self._lock:
            self._live_from_seq = self._next_seq

    def connection_lost(self) -> None:
        """Call on disconnect: until the next connection every record counts as historical."""
        with self._lock:
            self._live_from_seq = None

    def append(self, record: TelemetryRecord) -> int:
        """Persist ``record`` (fsynced) and return its seq; publish only after this returns."""
        body = record_body(record)
        with self._lock:
            return self._guarded(lambda: self._append_locked(body, record.kind, record.time_unix_ms))

    def pending(self, limit: int = 100, after_seq: int = 0) -> list[SpooledMessage]:
        """Up to ``limit`` unacknowledged records with seq > ``after_seq``, oldest first."""
        if not 1 <= limit <= MAX_PENDING_BATCH:
            raise ValueError(f"limit must be within 1..{MAX_PENDING_BATCH}")
        with self._lock:
            return self._guarded(lambda: self._pending_locked(limit, after_seq))

    def mark_sent(self, seq: int) -> bool:
        """Delete an acknowledged record; False when it was already gone (acked twice, or evicted)."""
        with self._lock:
            return self._guarded(lambda: self._mark_sent_locked(seq))

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(pending=self._pending, pending_bytes=self._bytes, next_seq=self._next_seq,
                              dropped_total=self._dropped, recoveries_total=self._recoveries,
                              recovered_from_corruption=self._recovered)

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise SpoolError("telemetry spool is not open")
        return self._connection

    def _guarded(self, operation: Callable[[], _T]) -> _T:
        """Run one locked operation; on corruption recreate the file and try once more."""
        connection = self._require()
        try:
            return operation()
        except BaseException as exc:
            _rollback_quietly(connection)
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            if not spool_db.is_corruption(exc):
                raise SpoolError(f"{self.path}: telemetry spool error: {exc}") from exc
            reason = str(exc)
        connection.close()
        self._connection = None
        self._connection = self._recreate(reason)
        self._load_counters(self._connection)
        try:
            return operation()
        except BaseException as exc:
            _rollback_quietly(self._connection)
            if isinstance(exc, sqlite3.DatabaseError):
                raise SpoolError(f"{self.path}: telemetry spool error after recovery: {exc}") from exc
            raise

    def _append_locked(self, body: bytes, kind: str, time_unix_ms: int) -> int:
        connection = self._require()
        seq = self._next_seq
        # historical=False is the longer spelling, so this is the largest the payload can get.
        size = len(encode_message(body, seq, historical=False))
        if size > self.record_limit:
            raise RecordTooLarge(f"telemetry record of {size} bytes exceeds the {self.record_limit}-byte limit")
        connection.execute("BEGIN IMMEDIATE")
        evicted, freed = self._evict_locked(connection, self._bytes + size - self.max_bytes)
        connection.execute("INSERT INTO records (seq, kind, time_unix_ms, body, size) VALUES (?, ?, ?, ?, ?)",
                           (seq, kind, time_unix_ms, body, size))
        connection.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (seq + 1,))
        if evicted:
            connection.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_total'", (evicted,))
        connection.execute("COMMIT")
        self._next_seq = seq + 1
        self._pending += 1 - evicted
        self._bytes += size - freed
        self._dropped += evicted
        if evicted:
            logger.warning("telemetry spool full, dropped oldest records", dropped=evicted,
                           max_bytes=self.max_bytes, dropped_total=self._dropped)
        return seq

    @staticmethod
    def _evict_locked(connection: sqlite3.Connection, excess: int) -> tuple[int, int]:
        """Delete the oldest records until ``excess`` bytes are freed; returns (records, bytes)."""
        if excess <= 0:
            return 0, 0
        evicted = freed = 0
        last_seq = 0
        for seq, size in connection.execute("SELECT seq, size FROM records ORDER BY seq"):
            evicted, freed, last_seq = evicted + 1, freed + int(size), int(seq)
            if freed >= excess:
                break
        connection.execute("DELETE FROM records WHERE seq <= ?", (last_seq,))
        return evicted, freed

    def _pending_locked(self, limit: int, after_seq: int) -> list[SpooledMessage]:
        rows = self._require().execute(
            "SELECT seq, kind, time_unix_ms, body FROM records WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit)).fetchall()
        live_from = self._live_from_seq
        messages = []
        for seq, kind, time_unix_ms, body in rows:
            historical = live_from is None or seq < live_from
            messages.append(SpooledMessage(seq, encode_message(bytes(body), seq, historical), kind,
                                           time_unix_ms, historical))
        return messages

    def _mark_sent_locked(self, seq: int) -> bool:
        connection = self._require()
        row = connection.execute("SELECT size FROM records WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            return False
        connection.execute("DELETE FROM records WHERE seq = ?", (seq,))
        self._pending -= 1
        self._bytes -= int(row[0])
        return True

    def _load_counters(self, connection: sqlite3.Connection) -> None:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        count, total = connection.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records").fetchone()
        self._next_seq = int(meta["next_seq"])
        self._dropped = int(meta["dropped_total"])
        self._recoveries = int(meta["recoveries_total"])
        self._pending, self._bytes = int(count), int(total)
        if self._live_from_seq is not None:
            self._live_from_seq = self._next_seq

    def _recreate(self, reason: str) -> sqlite3.Connection:
        """Move the corrupt file aside and start a fresh one that keeps seq increasing."""
        salvaged = spool_db.salvage(self.path)
        # Counters come back when the old file still yields them. Seq never goes back: without it,
        # consumers deduplicating by (device_id, seq) would discard new records as old ones. Unix ms
        # is above any seq a device reaches by counting, so it is a safe floor when salvage fails.
        next_seq = max(salvaged.next_seq if salvaged else 1, int(self._wall_clock() * 1000), self._next_seq)
        recoveries = (salvaged.recoveries_total if salvaged else self._recoveries) + 1
        dropped = salvaged.dropped_total if salvaged else self._dropped
        connection: sqlite3.Connection | None = None
        try:
            moved_to = spool_db.move_aside(self.path)
            connection = spool_db.connect(self.path)
            spool_db.check_or_create(connection)
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (next_seq, "next_seq"), (dropped, "dropped_total"), (recoveries, "recoveries_total")])
            connection.execute("COMMIT")
        except (OSError, sqlite3.Error, SpoolCorrupt) as exc:
            if connection is not None:
                connection.close()
            raise SpoolError(f"{self.path}: cannot recreate the corrupt telemetry spool: {exc}") from exc
        self._recovered = True
        logger.error("telemetry spool was corrupt; moved aside and recreated", path=str(self.path),
                     moved_to=str(moved_to), reason=reason, next_seq=next_seq, recoveries_total=recoveries)
        return connection


def _rollback_quietly(connection: sqlite3.Connection) -> None:
    # Rolling back a corrupt file can fail too; the original error is the one worth raising.
    try:
        if connection.in_transaction:
            connection.rollback()
    except sqlite3.Error:
        pass
