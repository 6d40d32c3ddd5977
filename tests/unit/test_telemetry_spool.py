"""Telemetry spool: persistence, seq, byte cap, historical flag, crash, corruption, concurrency."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.telemetry.records import RequestRecord, decode_message
from edged.telemetry.spool import MAX_RECORD_BYTES, RecordTooLarge, Spool, SpoolError

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_NOW = 1_800_000_000.0  # wall clock handed to the spool, seconds


def _record(index: int = 0) -> RequestRecord:
    return RequestRecord(device_id="pi-7", time_unix_ms=1_700_000_000_000 + index, outcome="ok",
                         transport="unix", priority="normal", profile="balanced", input_tokens=index,
                         output_tokens=3, duration_ms=float(index))


def _spool(path: Path, max_bytes: int = 1_000_000) -> Spool:
    spool = Spool(path, max_bytes, wall_clock=lambda: FAKE_NOW)
    spool.open()
    return spool


def _fill(path: Path, count: int) -> int:
    with _spool(path) as spool:
        for index in range(count):
            spool.append(_record(index))
        return spool.stats().next_seq


def test_append_pending_mark_sent(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        spool.connection_started()
        seqs = [spool.append(_record(index)) for index in range(3)]
        assert seqs == [1, 2, 3]
        pending = spool.pending(10)
        assert [m.seq for m in pending] == [1, 2, 3]
        message = decode_message(pending[0].payload)
        assert (message.seq, message.kind, message.time_unix_ms) == (1, "edged.request", 1_700_000_000_000)
        assert spool.mark_sent(2) is True
        assert spool.mark_sent(2) is False  # a second PUBACK for the same record is harmless
        assert spool.mark_sent(99) is False
        assert [m.seq for m in spool.pending(10)] == [1, 3]
        assert [m.seq for m in spool.pending(1)] == [1]
        assert [m.seq for m in spool.pending(10, after_seq=1)] == [3]
        stats = spool.stats()
        assert (stats.pending, stats.next_seq) == (2, 4)
        # the cap counts the live (longest) form of each payload
        assert stats.pending_bytes == sum(len(m.payload) for m in spool.pending(10) if not m.historical)


def test_seq_is_contiguous_and_survives_reopen_even_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path) as spool:
        for index in range(5):
            spool.append(_record(index))
        for message in spool.pending(10):
            spool.mark_sent(message.seq)
    with _spool(path) as spool:
        assert spool.stats().pending == 0
        assert [spool.append(_record(index)) for index in range(3)] == [6, 7, 8]
        assert spool.recovered_from_corruption is False


def test_byte_cap_drops_the_oldest_and_counts_persistently(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path, max_bytes=4096) as spool:
        spool.append(_record(0))
        size = len(spool.pending(1)[0].payload)
        with capture_logs() as logs:
            for index in range(1, 60):
                spool.append(_record(index))
        stats = spool.stats()
        assert stats.pending_bytes <= 4096
        assert stats.pending_bytes > 4096 - 2 * size
        remaining = [m.seq for m in spool.pending(1000)]
        assert remaining == list(range(61 - len(remaining), 61))  # the newest, still contiguous
        assert stats.dropped_total == 60 - len(remaining)
        assert any(entry["event"] == "telemetry spool full, dropped oldest records" for entry in logs)
    with _spool(path, max_bytes=4096) as spool:
        assert spool.stats().dropped_total == stats.dropped_total
        assert spool.stats().pending_bytes == stats.pending_bytes


def test_an_unacknowledged_record_survives_a_process_crash(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    script = (
        "import os, sys\n"
        "from edged.telemetry.spool import Spool\n"
        "from edged.telemetry.records import RequestRecord\n"
        "spool = Spool(sys.argv[1], 100_000)\n"
        "spool.open()\n"
        "for i in range(3):\n"
        "    spool.append(RequestRecord(device_id='pi-7', time_unix_ms=i, outcome='ok', transport='unix',"
        " priority='normal', profile='eco'))\n"
        "spool.mark_sent(1)\n"
        "os._exit(0)  # no close, no checkpoint: as abrupt as kill -9 for SQLite\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env, timeout=60)
    with _spool(path) as spool:
        assert [m.seq for m in spool.pending(10)] == [2, 3]
        assert spool.append(_record()) == 4
        assert spool.recovered_from_corruption is False


def test_historical_flag_follows_the_connection(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        spool.append(_record(1))  # before any connection: historical when sent
        spool.connection_started()
        spool.append(_record(2))
        flags = {m.seq: m.historical for m in spool.pending(10)}
        assert flags == {1: True, 2: False}
        assert [json.loads(m.payload)["historical"] for m in spool.pending(10)] == [True, False]
        spool.connection_lost()
        spool.append(_record(3))
        assert all(m.historical for m in spool.pending(10))
        spool.connection_started()
        spool.append(_record(4))
        assert {m.seq: m.historical for m in spool.pending(10)} == {1: True, 2: True, 3: True, 4: False}


def test_records_from_a_previous_run_are_historical(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    _fill(path, 2)
    with _spool(path) as spool:
        spool.connection_started()
        spool.append(_record(3))
        assert [m.historical for m in spool.pending(10)] == [True, True, False]


def _assert_recovered(spool: Spool, path: Path, logs: list[dict[str, Any]], floor: int) -> None:
    assert spool.recovered_from_corruption is True
    assert spool.stats().recoveries_total >= 1
    assert spool.stats().recovered_from_corruption is True
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "telemetry spool was corrupt; moved aside and recreated"]
    assert len(list(path.parent.glob("spool.db.corrupt-*"))) >= 1
    seq = spool.append(_record())
    assert seq >= floor
    assert [m.seq for m in spool.pending(10)] == [seq]


def test_garbage_file_is_moved_aside_and_recreated(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with capture_logs() as logs, _spool(path) as spool:
        _assert_recovered(spool, path, logs, floor=int(FAKE_NOW * 1000))
    (moved,) = [p for p in tmp_path.glob("spool.db.corrupt-*") if not p.name.endswith("-wal")]
    assert moved.read_bytes() == garbage


def test_truncated_database_is_recreated_and_seq_keeps_increasing(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    next_seq = _fill(path, 150)  # ~12 pages, checkpointed into the main file on close
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    with capture_logs() as logs, _spool(path) as spool:
        _assert_recovered(spool, path, logs, floor=next_seq)


def test_foreign_sqlite_file_is_treated_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE something_else (x)")
    other.commit()
    other.close()
    with capture_logs() as logs, _spool(path) as spool:
        _assert_recovered(spool, path, logs, floor=1)


def test_counters_are_salvaged_from_a_readable_file_with_the_wrong_version(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path, max_bytes=4096) as spool:
        for index in range(40):
            spool.append(_record(index))
        dropped = spool.stats().dropped_total
    assert dropped > 0
    other = sqlite3.connect(path)
    other.execute("PRAGMA user_version=99")
    other.close()
    # a wall clock at 0 takes the time floor out of play: seq must come from the salvaged counter
    with Spool(path, 4096, wall_clock=lambda: 0.0) as spool:
        assert spool.recovered_from_corruption is True
        assert (spool.stats().dropped_total, spool.stats().recoveries_total) == (dropped, 1)
        assert spool.append(_record()) == 41


def test_empty_file_is_initialised_without_a_recovery(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"")
    with _spool(path) as spool:
        assert spool.append(_record()) == 1
        assert spool.recovered_from_corruption is False


def test_corruption_found_at_run_time_is_recovered(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    with _spool(path) as spool:
        spool.append(_record())
        real = spool._connection
        assert real is not None

        class FailingOnce:
            """Stands in for the connection for one call, as SQLite does on a damaged page."""

            in_transaction = False

            def execute(self, *args: Any) -> Any:
                error = sqlite3.DatabaseError("database disk image is malformed")
                error.sqlite_errorcode = 11  # type: ignore[attr-defined]
                raise error

            def close(self) -> None:
                real.close()

        spool._connection = FailingOnce()  # type: ignore[assignment]
        with capture_logs() as logs:
            seq = spool.append(_record())
        assert seq >= int(FAKE_NOW * 1000)
        assert spool.recovered_from_corruption is True
        assert spool.stats().recoveries_total == 1
        assert [m.seq for m in spool.pending(10)] == [seq]
        assert any(entry["event"].startswith("telemetry spool was corrupt") for entry in logs)


def test_only_the_newest_corrupt_copies_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    for _ in range(5):
        path.write_bytes(os.urandom(4096))
        _spool(path).close()
    assert len([p for p in tmp_path.glob("spool.db.corrupt-*") if not p.name.endswith("-wal")]) == 3


def test_unopenable_path_is_an_error_not_a_recovery(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.mkdir()
    with pytest.raises(SpoolError, match="cannot open"):
        _spool(path)
    assert path.is_dir()
    assert not list(tmp_path.glob("spool.db.corrupt-*"))


def test_oversized_record_is_refused_without_using_a_seq(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db") as spool:
        assert spool.record_limit == MAX_RECORD_BYTES
        huge = _record().model_copy(update={"profile": "x" * MAX_RECORD_BYTES})  # bypasses validation
        with pytest.raises(RecordTooLarge, match=f"exceeds the {MAX_RECORD_BYTES}-byte limit"):
            spool.append(huge)
        assert spool.append(_record()) == 1
        assert spool.stats().pending == 1


def test_a_small_spool_limits_records_to_its_own_size(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool.db", max_bytes=4096) as spool:
        assert spool.record_limit == 4096
        big = _record().model_copy(update={"reject_reason": "r" * 5000})
        with pytest.raises(RecordTooLarge, match="exceeds the 4096-byte limit"):
            spool.append(big)
        assert spool.stats().pending == 0


def test_bad_arguments_and_use_before_open(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Spool(tmp_path / "spool.db", 100)
    spool = Spool(tmp_path / "spool.db", 100_000)
    with pytest.raises(SpoolError, match="not open"):
        spool.append(_record())
    spool.open()
    with pytest.raises(ValueError):
        spool.pending(0)
    spool.close()


def test_concurrent_appends_and_acks_keep_seq_unique_and_contiguous(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = _spool(path)
    appended: list[int] = []
    acked: list[int] = []
    appenders_done = threading.Event()
    errors: list[BaseException] = []

    def appender(base: int) -> None:
        try:
            for index in range(60):
                appended.append(spool.append(_record(base + index)))
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    def acker() -> None:
        try:
            while True:
                batch = spool.pending(50)
                for message in batch:
                    if spool.mark_sent(message.seq):
                        acked.append(message.seq)
                if not batch:
                    if appenders_done.is_set():
                        return
                    time.sleep(0.001)  # nothing to ack yet; let the appenders take the lock
        except BaseException as exc:
            errors.append(exc)

    ack_thread = threading.Thread(target=acker)
    threads = [threading.Thread(target=appender, args=(1000 * n,)) for n in range(4)]
    ack_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    appenders_done.set()
    ack_thread.join(timeout=60)
    assert not errors
    assert sorted(appended) == list(range(1, 241))
    assert sorted(acked) == list(range(1, 241))
    assert (spool.stats().pending, spool.stats().pending_bytes) == (0, 0)
    spool.close()
    with _spool(path) as reopened:
        assert reopened.stats().pending == 0
        assert reopened.append(_record()) == 241
