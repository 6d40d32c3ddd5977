"""The spool's SQLite file: schema, integrity check, and moving a corrupt file aside."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

from edged.errors import SpoolCorrupt, SpoolError

logger = structlog.get_logger(__name__)

APPLICATION_ID: Final = 0x65646764  # "edgd": tells our spool from any other SQLite file
SCHEMA_VERSION: Final = 1
KEEP_CORRUPT_FILES: Final = 3  # older .corrupt-* copies are deleted so repeated faults cannot fill the disk
# Primary result codes (extended codes carry them in the low byte).
SQLITE_CORRUPT: Final = 11
SQLITE_NOTADB: Final = 26

_TABLES: Final = {
    "records": ["seq", "kind", "time_unix_ms", "body", "size"],
    "meta": ["key", "value"],
}
_CREATE: Final = (
    "CREATE TABLE records (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, time_unix_ms INTEGER NOT NULL,"
    " body BLOB NOT NULL, size INTEGER NOT NULL)",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
META_KEYS: Final = ("next_seq", "dropped_total", "recoveries_total")


@dataclass(frozen=True, slots=True)
class Salvage:
    """Counters read back from a corrupt file where that still worked."""

    next_seq: int
    dropped_total: int
    recoveries_total: int


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True for "database disk image is malformed" and "file is not a database"."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN IMMEDIATE/COMMIT ourselves; one connection shared by threads
    # under the spool's lock, hence check_same_thread=False.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise SpoolError(f"{path}: SQLite refused WAL mode (got {mode!r}); is it on a normal filesystem?")
        # FULL: a committed append is on disk before it is published, so a power cut can never hand
        # out the same seq twice (consumers would drop the second record as a duplicate). It costs
        # one fsync per append and per ack, which is small next to one LLM request.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA journal_size_limit=1048576")
    except BaseException:
        connection.close()
        raise
    return connection


def _columns(connection: sqlite3.Connection, table: str) -> list[str]:
    return [str(row[1]) for row in connection.execute(f"PRAGMA table_info({table})")]


def check_or_create(connection: sqlite3.Connection) -> None:
    """Create the schema in an empty file, or prove an existing one is ours and intact."""
    application_id = connection.execute("PRAGMA application_id").fetchone()[0]
    tables = {str(row[0]) for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if application_id == 0 and not tables:
        connection.execute("BEGIN IMMEDIATE")
        for statement in _CREATE:
            connection.execute(statement)
        connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                               [("next_seq", 1), ("dropped_total", 0), ("recoveries_total", 0)])
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        connection.execute("COMMIT")
        return
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if application_id != APPLICATION_ID or version != SCHEMA_VERSION:
        raise SpoolCorrupt(f"wrong schema (application_id={application_id:#x}, user_version={version})")
    for table, columns in _TABLES.items():
        if _columns(connection, table) != columns:
            raise SpoolCorrupt(f"wrong schema: table {table} has columns {_columns(connection, table)}")
    result = [str(row[0]) for row in connection.execute("PRAGMA quick_check")]
    if result != ["ok"]:
        raise SpoolCorrupt(f"integrity check failed: {'; '.join(result[:3])}")
    keys = {str(row[0]) for row in connection.execute("SELECT key FROM meta")}
    if not set(META_KEYS) <= keys:
        raise SpoolCorrupt("wrong schema: meta counters missing")


def salvage(path: Path) -> Salvage | None:
    """Best effort: read the counters of a corrupt file read-only; ``None`` when even that fails."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        meta = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        salvaged = Salvage(next_seq=int(meta["next_seq"]), dropped_total=int(meta["dropped_total"]),
                           recoveries_total=int(meta["recoveries_total"]))
    except (sqlite3.Error, KeyError, TypeError, ValueError):
        connection.close()
        return None
    try:
        # The records table may be the damaged part; the meta counters above are still worth having.
        highest = connection.execute("SELECT MAX(seq) FROM records").fetchone()[0] or 0
        return Salvage(max(salvaged.next_seq, int(highest) + 1), salvaged.dropped_total, salvaged.recoveries_total)
    except (sqlite3.Error, TypeError, ValueError):
        return salvaged
    finally:
        connection.close()


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename ``path`` (and its -wal) to ``<name>.corrupt-<UTC time>``; drop -shm; prune old copies."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    counter = 1
    while target.exists():
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{counter}")
        counter += 1
    if path.exists():
        os.replace(path, target)
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size > 0:
        os.replace(wal, target.with_name(target.name + "-wal"))
    wal.unlink(missing_ok=True)
    path.with_name(path.name + "-shm").unlink(missing_ok=True)
    _prune(path)
    _fsync_directory(path.parent)
    return target


def _prune(path: Path) -> None:
    copies = sorted(path.parent.glob(f"{path.name}.corrupt-*"), key=lambda p: p.stat().st_mtime_ns)
    main_copies = [p for p in copies if not p.name.endswith("-wal")]
    for old in main_copies[:-KEEP_CORRUPT_FILES]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + "-wal").unlink(missing_ok=True)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
