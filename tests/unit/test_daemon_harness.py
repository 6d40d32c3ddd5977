"""tests/daemon.py's waits: incremental log reading, and failing at once (with the log) when the daemon exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon import DaemonProcess, LogFollower


def write(path: Path, text: str) -> None:
    with path.open("a") as handle:
        handle.write(text)


def test_follower_reads_only_complete_new_lines_and_restarts_on_a_new_file(tmp_path: Path):
    log, follower = tmp_path / "edged.log", LogFollower()
    follower.refresh(log)  # no file yet
    assert follower.lines == []
    write(log, '{"event": "a"}\nTraceback (not json)\n{"event": "b"')
    follower.refresh(log)
    assert [line["event"] for line in follower.lines] == ["a"]  # "b" is still being written
    write(log, ', "n": 1}\n[1, 2]\n')
    follower.refresh(log)
    assert follower.lines == [{"event": "a"}, {"event": "b", "n": 1}]  # a JSON array is not a log line
    log.rename(tmp_path / "first-life.log")
    write(log, '{"event": "c"}\n')
    follower.refresh(log)
    assert follower.lines == [{"event": "c"}]


def exiting_daemon(tmp_path: Path, lines: list[dict[str, object]], code: int) -> DaemonProcess:
    """A stand-in process that logs `lines` and exits with `code`, so the harness itself can be tested fast."""
    daemon = DaemonProcess(tmp_path / "d")
    script = "import json, sys\nfor line in json.loads(sys.argv[1]): print(json.dumps(line))\nsys.exit(int(sys.argv[2]))"
    with daemon.log_path.open("ab") as out:
        daemon.proc = subprocess.Popen([sys.executable, "-c", script, json.dumps(lines), str(code)], stdout=out)
    daemon.proc.wait(30)
    return daemon


def test_a_wait_fails_at_once_with_the_log_when_the_daemon_exits(tmp_path: Path):
    daemon = exiting_daemon(tmp_path, [{"event": "config rejected", "detail": "bad key"}], 2)
    # timeout=600 is past pytest's 300 s limit: only the exit can end this wait in time
    with pytest.raises(AssertionError, match=r"(?s)exited with 2 before the ready line.*config rejected"):
        daemon.wait_ready(timeout=600)
    with pytest.raises(AssertionError, match="exited with 2"):
        daemon.check_alive()


def test_lines_logged_before_the_exit_still_match(tmp_path: Path):
    daemon = exiting_daemon(tmp_path, [{"event": "ready"}, {"event": "stopped", "code": 0}], 0)
    assert daemon.wait_for_log(lambda line: line.get("event") == "stopped", timeout=600)["code"] == 0
    assert [line["event"] for line in daemon.log_lines()] == ["ready", "stopped"]


def test_in_process_log_router_keeps_lines_whole_and_per_daemon_also_from_threads_it_starts(tmp_path: Path, capsys):
    import threading

    from tests.inprocess import _SINK, LogRouter, LogSink, _inherit_sink

    router = LogRouter()
    sinks = {name: LogSink(tmp_path / f"{name}.log") for name in ("a", "b")}
    children: dict[str, threading.Thread] = {}

    def daemon(name: str) -> None:
        _SINK.set(sinks[name])
        router.write(f'{{"event": "first", "daemon": "{name}"')  # print() sends the newline on its own
        child = children[name] = threading.Thread(target=router.write, args=(f'{{"event": "child", "daemon": "{name}"}}\n',))
        _inherit_sink(child)  # what threading.Thread.start does once the harness is installed
        child.join()
        router.write("}\n")

    threads = [threading.Thread(target=daemon, args=(name,)) for name in sinks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    router.write('{"event": "from the test thread"}\n')
    for name, sink in sinks.items():
        lines = [json.loads(line) for line in sink.path.read_text().splitlines()]
        assert sorted(line["event"] for line in lines) == ["child", "first"]
        assert {line["daemon"] for line in lines} == {name}
        assert sink.threads == [children[name]]
    assert '"from the test thread"' in capsys.readouterr().err
