"""The in-process harness itself (tests/inprocess.py): logs per daemon, and a stop that frees the model."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.inprocess import InProcessDaemon

pytestmark = pytest.mark.slow  # starts daemons with the real model

QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 8}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def answer(daemon: InProcessDaemon) -> str:
    with daemon.client() as client:
        return list(client.ask(QUESTION))[-1]["choices"][0]["message"]["content"]


def test_two_daemons_at_once_each_log_their_own_lines(tmp_path: Path) -> None:
    first = InProcessDaemon(tmp_path / "first", "--device-id", "first-1").start()
    second = InProcessDaemon(tmp_path / "second", "--device-id", "second-1").start()
    try:
        assert answer(first).strip() and answer(second).strip()
        for daemon, other in ((first, second), (second, first)):
            lines = daemon.log_lines()
            (ready,) = [line for line in lines if line.get("event") == "ready"]
            assert ready["socket"] == str(daemon.socket) and ready["socket"] != str(other.socket)
            # logged on the model thread, which the daemon started: it lands in the starter's log
            assert len([line for line in lines if line.get("event") == "model loaded"]) == 1
            assert len(daemon.wait_for_log(lambda line: line.get("event") == "request")) > 0
            assert len(daemon.request_logs()) == 1
        assert first.status()["device_id"] == "first-1" and second.status()["device_id"] == "second-1"
    finally:
        first.kill()
        second.kill()


def test_stop_drains_frees_the_model_and_every_thread_it_started(tmp_path: Path) -> None:
    before_threads = set(threading.enumerate())
    freed: list[int] = []
    for life in range(2):
        daemon = InProcessDaemon(tmp_path / f"life{life}").start()
        assert answer(daemon).strip()
        loaded = rss_kib()
        assert daemon.stop() == 0  # also asserts that no thread the daemon started is left
        assert not daemon.socket.exists() and not daemon.alive()
        assert any(line.get("event") == "stopped" for line in daemon.log_lines())
        after = rss_kib()
        assert after < loaded - 40_000, (loaded, after)  # the 98 MB model and its context are gone
        freed.append(after)
    # A second daemon's life leaves the process where the first left it: nothing per daemon stays.
    assert freed[1] < freed[0] + 40_000, freed
    assert set(threading.enumerate()) <= before_threads | {threading.current_thread()}


def test_a_start_that_fails_reports_the_error_and_exit_code(tmp_path: Path) -> None:
    daemon = InProcessDaemon(tmp_path / "d", "--model", str(tmp_path / "missing.gguf")).start(wait_ready=False)
    refused = daemon.wait_for_log(lambda line: line.get("event") == "cannot start")
    assert "missing.gguf: no such file or directory" in refused["error"]
    assert daemon.stop() == 1


def test_process_wide_hooks_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="subprocess harness"):
        InProcessDaemon(tmp_path / "d", env={"EDGED_TEST_PAUSE_UPDATE_AT": "switched"})
    with pytest.raises(AssertionError, match="subprocess harness"):
        InProcessDaemon(tmp_path / "d", env={"NOTIFY_SOCKET": "/run/systemd/notify"})
