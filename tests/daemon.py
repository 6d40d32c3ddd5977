"""Run `edged serve` as a subprocess for integration tests, with its own socket, state dir and log file.

`DaemonBase` is what every test sees of a daemon (its socket, state dir, log lines, status, stop);
`DaemonProcess` runs it as a subprocess, `tests.inprocess.InProcessDaemon` on a thread of the test
process. Subprocess daemons are for what only a process has: signals, kill -9, exit codes, its RSS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from edged.clients.socket import SocketClient
from edged.errors import TransportError
from tests.slowdown import daemon_env, scaled

REPO = Path(__file__).resolve().parent.parent


class DaemonBase:
    """A daemon's files, client, status and log; subclasses run it and say whether it has exited."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "edged.sock"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "edged.log"
        self.args = args
        self._log = LogFollower()
        self._started_at_line = 0

    def returncode(self) -> int | None:
        """The exit code once the daemon has exited; None while it runs (or before it started)."""
        raise NotImplementedError

    def alive(self) -> bool:
        return self.returncode() is None

    def wait_ready(self, timeout: float = 120.0) -> None:
        self._wait(lambda line: line.get("event") == "ready", timeout, "the ready line", self._started_at_line)

    def check_alive(self) -> None:
        """Raise at once, with the daemon's log, when the daemon has exited (a wait would only time out)."""
        if (code := self.returncode()) is not None:
            raise AssertionError(f"edged exited with {code}:\n{self.log_tail()}")

    def client(self, timeout: float = 120.0) -> SocketClient:
        client = SocketClient(self.socket, timeout=scaled(timeout))
        client.connect()
        return client

    def status(self) -> dict[str, Any]:
        with self.client(timeout=10) as client:
            return client.control("status")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 8000) -> str:
        return self.log_text()[-chars:]

    def log_lines(self) -> list[dict[str, Any]]:
        """Every JSON line logged so far; only the bytes written since the last call are read and parsed."""
        self._log.refresh(self.log_path)
        return list(self._log.lines)

    def request_logs(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == "request"]

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                     what: str = "a matching log line") -> dict[str, Any]:
        """The first log line (old or new) that matches; fails at once when the daemon exits first."""
        return self._wait(predicate, timeout, what, 0)

    def _wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str,
              checked: int) -> dict[str, Any]:
        end = time.monotonic() + scaled(timeout)
        while True:
            code = self.returncode()
            self._log.refresh(self.log_path)  # after the exit check: a daemon's last lines are in before its exit
            lines = self._log.lines
            for line in lines[checked:]:
                if predicate(line):
                    return line
            checked = len(lines)
            if code is not None:
                raise AssertionError(f"edged exited with {code} before {what}:\n{self.log_tail()}")
            if time.monotonic() > end:
                raise AssertionError(f"no {what} within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.05)


class DaemonProcess(DaemonBase):
    """`python -m edged serve` with the test's arguments and environment, its output in `log_path`."""

    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, *args, env=env)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **daemon_env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> "DaemonProcess":
        cmd = [sys.executable, "-m", "edged", "serve", "--socket", str(self.socket),
               "--state-dir", str(self.state_dir), *self.args]
        self._started_at_line = len(self.log_lines())  # a restart appends: an earlier life's "ready" is not ours
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"edged did not stop within {timeout}s:\n{self.log_text()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LogFollower:
    """Parsed JSON lines of a log file, read incrementally; starts over when the file is replaced."""

    def __init__(self) -> None:
        self._reset(None)

    def _reset(self, inode: int | None) -> None:
        self.lines: list[dict[str, Any]] = []
        self._offset = 0
        self._inode = inode
        self._partial = b""

    def refresh(self, path: Path) -> None:
        try:
            with path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._reset(stat.st_ino)  # renamed away (a second life) or truncated: read the new file whole
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        *complete, self._partial = (self._partial + data).split(b"\n")
        for raw in complete:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a traceback or a line from a library that does not log JSON
            if isinstance(line, dict):
                self.lines.append(line)


def socket_alive(path: Path) -> bool:
    try:
        with SocketClient(path, timeout=2):
            return True
    except TransportError:
        return False
