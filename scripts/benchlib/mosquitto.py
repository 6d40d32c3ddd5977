"""A throw-away mosquitto broker on a free loopback port, for the MQTT target.

Mirrors tests/mosquitto.py (which the benchmark must not import: it pulls in pytest) in the small part
the benchmark needs: anonymous, plain TCP, no persistence, its own config file and log in the run
directory. Started through procs.spawn, so it dies with the benchmark however the benchmark exits.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from benchlib import procs

HOST = "127.0.0.1"
READY_TIMEOUT_S = 10.0
# mosquitto lives in /usr/sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto", path=_SEARCH_PATH)


class Broker:
    """`mosquitto -c <conf>` listening on 127.0.0.1:<free port>; start() waits until it accepts TCP."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = 0
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"       # the broker's own log (flushed per line)
        self.output_path = workdir / "mosquitto.out"    # stdout/stderr: config errors come before the log opens
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> "Broker":
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto); needed for the MQTT target")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_loopback_port()
        self._write_config()
        with self.output_path.open("wb") as output:
            self._proc = procs.spawn([binary, "-c", str(self.config_path)], stdout=output, stderr=subprocess.STDOUT)
        procs.wait_until(self._listening, self._proc, READY_TIMEOUT_S, "mosquitto", self.output_path, poll_s=0.02)
        return self

    def _listening(self) -> bool:
        try:
            socket.create_connection((HOST, self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        return procs.stop(self._proc, grace_s=5.0)

    def _write_config(self) -> None:
        # Started as root, mosquitto would switch to user 'mosquitto', who cannot read the run directory.
        lines = ["user root"] if os.geteuid() == 0 else []
        lines += ["persistence false",
                  f"log_dest file {self.log_path}",
                  "log_type error", "log_type warning", "log_type notice",
                  "connection_messages true",
                  f"listener {self.port} {HOST}",
                  "allow_anonymous true"]
        self.config_path.write_text("\n".join(lines) + "\n")
