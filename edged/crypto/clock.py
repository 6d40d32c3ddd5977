"""Is the system clock trustworthy? The timestamp check of e2e-v1 depends on the answer."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

import structlog

logger = structlog.get_logger(__name__)

# One vocabulary for what an unsynchronised clock means, in [e2e] and [updates] alike:
#   reject              refuse what needs the time (sealed MQTT requests; update offers, reason clock)
#   accept-unsynced     [e2e] only: skip the timestamp check (an expiry check is never skipped)
#   trust-system-clock  the clock counts as synchronised (VMs and containers whose host keeps time)
ClockPolicy = Literal["reject", "accept-unsynced", "trust-system-clock"]
CLOCK_POLICIES: Final = ("reject", "accept-unsynced", "trust-system-clock")
UpdateClockPolicy = Literal["reject", "trust-system-clock"]
# [updates] spelled these before the two sections shared one vocabulary; configs that use them still load.
LEGACY_UPDATE_CLOCK_POLICIES: Final = {"require_sync": "reject", "trust_local": "trust-system-clock"}


def update_clock_policy(value: object) -> object:
    """A pydantic before-validator: the [updates] section's old words mapped onto the shared vocabulary."""
    return LEGACY_UPDATE_CLOCK_POLICIES.get(value, value) if isinstance(value, str) else value

TIMESYNC_FLAG_FILE: Final = "run/systemd/timesync/synchronized"
STA_UNSYNC: Final = 0x0040
TIME_ERROR: Final = 5  # adjtimex(2) return value while the kernel clock is not synchronised


class _Timex(ctypes.Structure):
    # Only the fields up to `status` matter; the tail is generous room for the rest of struct timex.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def kernel_clock_status() -> int | None:
    """The kernel NTP status word from adjtimex(2) in read-only mode, or None if unavailable.

    A failing call (seccomp's @clock filter or ProtectClock= answer EPERM) gives None, and so
    does a missing libc: the state is unknown, and unknown means "not synchronised". A return
    value of TIME_ERROR sets STA_UNSYNC in the answer, whatever the status word says.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running process's libc, without a library search
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    timex = _Timex()  # modes = 0: read only, needs no privilege
    state = adjtimex(ctypes.byref(timex))
    if state < 0:
        return None
    status = int(timex.status)
    return status | STA_UNSYNC if state == TIME_ERROR else status


def clock_synchronised(root: Path | str = "/",
                       read_kernel_status: Callable[[], int | None] = kernel_clock_status) -> bool:
    """True if systemd-timesyncd has synced (its flag file exists) or the kernel clears STA_UNSYNC.

    The one answer for the e2e timestamp check and the update expiry check. chrony and ntpd do
    not write the flag file but clear STA_UNSYNC once disciplined. An unknown kernel status
    (the call failed) counts as not synchronised.
    """
    if (Path(root) / TIMESYNC_FLAG_FILE).exists():
        return True
    status = read_kernel_status()
    return status is not None and not status & STA_UNSYNC


class ClockGuard:
    """Caches clock_synchronised() for a few seconds and logs changes; safe from any thread."""

    def __init__(self, policy: ClockPolicy = "reject", root: Path | str = "/", recheck_s: float = 10.0,
                 read_kernel_status: Callable[[], int | None] = kernel_clock_status) -> None:
        if policy not in CLOCK_POLICIES:
            raise ValueError(f"clock policy must be one of {CLOCK_POLICIES}, not {policy!r}")
        self.policy: ClockPolicy = policy
        self._root = Path(root)
        self._recheck_s = recheck_s
        self._read_kernel_status = read_kernel_status
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._synchronised = False

    def synchronised(self, monotonic_now: float) -> bool:
        """The cached answer, refreshed when older than ``recheck_s`` (monotonic seconds)."""
        if self.policy == "trust-system-clock":
            return True  # the operator vouches for the clock (a VM or container whose host keeps time)
        with self._lock:
            if self._checked_at is not None and monotonic_now - self._checked_at < self._recheck_s:
                return self._synchronised
            synced = clock_synchronised(self._root, self._read_kernel_status)
            if synced != self._synchronised or self._checked_at is None:
                if synced:
                    logger.info("system clock synchronised", clock_policy=self.policy)
                else:
                    logger.warning("system clock not synchronised", clock_policy=self.policy)
            self._synchronised = synced
            self._checked_at = monotonic_now
            return synced
