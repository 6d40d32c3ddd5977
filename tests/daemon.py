"""Run `edged serve` as a subprocess for integration tests, with its own socket, state dir and log file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from edged.client import SocketClient
from edged.errors import TransportError

REPO = Path(__file__).resolve().parent.parent


class DaemonProcess:
    def __init__(self, workdir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.socket = workdir / "edged.sock"
        self.state_dir = workdir / "state"
        self.log_path = workdir / "edged.log"
        self.args = args
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> "DaemonProcess":
        cmd = [sys.executable, "-m", "edged", "serve", "--socket", str(self.socket),
               "--state-dir", str(self.state_dir), *self.args]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO)
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"edged exited with {self.proc.returncode} before ready:\n{self.log_text()}")
            if any(line.get("event") == "ready" for line in self.log_lines()):
                return
            time.sleep(0.05)
        raise AssertionError(f"edged not ready within {timeout}s:\n{self.log_text()}")

    def client(self, timeout: float = 120.0) -> SocketClient:
        client = SocketClient(self.socket, timeout=timeout)
        client.connect()
        return client

    def status(self) -> dict[str, Any]:
        with self.client(timeout=10) as client:
            return client.control("status")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"edged did not stop within {timeout}s:\n{self.log_text()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return lines

    def request_logs(self) -> list[dict[str, Any]]:
        return [line for line in self.log_lines() if line.get("event") == "request"]

    def wait_for_log(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no matching log line within {timeout}s:\n{self.log_text()[-4000:]}")


def socket_alive(path: Path) -> bool:
    try:
        with SocketClient(path, timeout=2):
            return True
    except TransportError:
        return False
