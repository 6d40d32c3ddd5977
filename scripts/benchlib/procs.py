"""Child processes that never outlive the benchmark, and the /proc readers the measurements use.

Every child starts in its own session (so its whole process group, e.g. cmake's compilers, can be
signalled at once) and with PR_SET_PDEATHSIG, so the kernel kills it even if the benchmark itself is
SIGKILLed and gets no chance to clean up.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Callable, Sequence

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PR_SET_PDEATHSIG = 1

_children: list[subprocess.Popen[bytes]] = []


def _die_with_parent() -> None:
    # Runs in the child between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(cmd: Sequence[str], *, stdout: IO[bytes] | int | None = None, stderr: IO[bytes] | int | None = None,
          stdin: int | None = subprocess.DEVNULL, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a child that is killed when the benchmark exits, however it exits."""
    proc = subprocess.Popen(list(cmd), stdout=stdout, stderr=stderr, stdin=stdin, env=env, cwd=cwd,
                            start_new_session=True, preexec_fn=_die_with_parent)  # noqa: PLW1509 (prctl only, async-signal-safe)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, grace_s: float = 15.0) -> int:
    """Ask the child's process group to stop, then kill it after `grace_s`; returns the exit code."""
    if proc.poll() is None:
        _signal_group(proc, sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def stop_all() -> None:
    for proc in list(_children):
        stop(proc, grace_s=5.0)


def install_cleanup() -> None:
    """Kill every child on normal exit, on exceptions, on Ctrl-C and on SIGTERM/SIGHUP."""
    atexit.register(stop_all)

    def _on_signal(signum: int, frame: object) -> None:
        # Turned into an exception so `finally` blocks (and atexit) run; exit status 128+N as shells do.
        print(f"\nbench: got signal {signum}, stopping children", file=sys.stderr)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    # Ctrl-C raises KeyboardInterrupt, which the CLI catches; set explicitly because Python leaves SIGINT
    # ignored when it started ignored (e.g. run in the background by a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float, what: str,
               log_path: Path | None = None, poll_s: float = 0.01) -> None:
    """Poll `ready` until true; fail early and clearly if the process dies or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready"
                               + log_tail(log_path))
        if ready():
            return
        time.sleep(poll_s)
    raise RuntimeError(f"{what} was not ready within {timeout_s:.0f} s" + log_tail(log_path))


def log_tail(path: Path | None, lines: int = 30) -> str:
    if path is None or not path.exists():
        return ""
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(tail)} lines of {path} ---\n" + "\n".join(tail)


# ---- /proc readers ---------------------------------------------------------------------------

def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM: the most resident memory the process has had so far."""
    return _status_kib(pid, "VmHWM")


def rss_bytes(pid: int) -> int | None:
    return _status_kib(pid, "VmRSS")


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def stat_fields(pid: int | str) -> list[str] | None:
    """/proc/PID/stat split after the command name (which may contain spaces and parentheses)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return raw[raw.rfind(")") + 2:].split()


def cpu_ticks(pid: int, include_children: bool = False) -> int | None:
    """utime+stime (and with include_children the reaped children's too), in clock ticks."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if include_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks
