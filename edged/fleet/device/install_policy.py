"""When a downloaded, verified release may be installed: the install window, ``install_when``, the profile.

The decision (``decide``) is a pure function of the policy, the local time and the device's state.
``InstallGate.wait`` holds an update at ``downloaded`` (or ``staged`` after a restart) until the
decision allows it, reporting ``deferred`` with the reason once per change. It never polls: it
sleeps until the window opens, or until an event says the device changed (a request finished,
the profile changed, a reload), and at most ``MAX_SLEEP_S`` so a clock that jumps (NTP syncing
at boot on a board without an RTC) is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import structlog

from edged.fleet.device.journal import UpdateRecord
from edged.fleet.install_window import InstallWindow
from edged.fleet.settings import InstallWhen, UpdateSettings
from edged.state import InstallState

logger = structlog.get_logger(__name__)

MAX_SLEEP_S: Final = 300.0  # longest sleep between two checks while deferred: bounds a missed clock jump
DeferReason = Literal["install_window", "not_parked", "profile", "busy"]
LocalClock = Callable[[], datetime]


def system_local_now() -> datetime:
    """Now, aware, in the system's local time zone (``TZ``, else /etc/localtime, as libc read it at start)."""
    return datetime.now().astimezone()


@dataclass(frozen=True, slots=True)
class Deferral:
    reason: DeferReason
    detail: str
    recheck_in_s: float  # when the time alone could change the answer; MAX_SLEEP_S when only an event can


@dataclass(frozen=True, slots=True)
class InstallPolicy:
    window: InstallWindow | None
    when: InstallWhen

    @classmethod
    def from_settings(cls, settings: UpdateSettings) -> InstallPolicy:
        return cls(settings.window(), settings.install_when)


def decide(policy: InstallPolicy, now: datetime, state: InstallState) -> Deferral | None:
    """None = install now; else the first reason that holds, the slowest to change first."""
    window = policy.window
    if window is not None and not window.contains(now):
        return Deferral("install_window", f"installs after {window.opens_at} local time (window {window})",
                        min(MAX_SLEEP_S, window.seconds_until_open(now)))
    if policy.when == "parked" and not state.parked:
        return Deferral("not_parked", f"installs once parked (ignition off); profile now {state.profile}",
                        MAX_SLEEP_S)
    if not state.profile_allows_installs:
        return Deferral("profile", f"the {state.profile} profile does not allow installs", MAX_SLEEP_S)
    if policy.when == "idle" and state.busy:
        return Deferral("busy", "installs when no request is in flight or queued", MAX_SLEEP_S)
    return None


Report = Callable[..., None]


class InstallGate:
    """One per update service; ``recheck`` is an event-hub listener (cheap: it only sets a flag)."""

    def __init__(self, policy: InstallPolicy, state: Callable[[], InstallState],
                 clock: LocalClock = system_local_now) -> None:
        self.policy = policy
        self._state = state
        self.clock = clock  # tests set a fake
        self._wake = asyncio.Event()
        self.waiting: Deferral | None = None  # set while an update is held; a newer offer may supersede it

    def recheck(self, *_: object) -> None:
        """A request finished, the profile changed, or the daemon reloaded: look again soon."""
        if self.waiting is not None:
            self._wake.set()

    def decision(self) -> Deferral | None:
        return decide(self.policy, self.clock(), self._state())

    async def wait(self, record: UpdateRecord, report: Report) -> None:
        """Return once ``record`` may be installed; report ``deferred`` whenever the reason or detail changes."""
        shown: tuple[str, str] | None = None
        try:
            while (deferral := self.decision()) is not None:
                self.waiting = deferral
                if shown != (deferral.reason, deferral.detail):
                    shown = (deferral.reason, deferral.detail)
                    logger.info("update deferred", channel=record.channel, version=record.version,
                                reason=deferral.reason, detail=deferral.detail)
                    report("deferred", record, reason=deferral.reason, detail=deferral.detail)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    # A moment past the opening, so the window contains the clock when it is read again.
                    await asyncio.wait_for(self._wake.wait(), deferral.recheck_in_s + 0.5)
                # Listeners run inside the emitter (e.g. the core, before it clears its running request):
                # give it the loop once before looking again.
                await asyncio.sleep(0)
            if shown is not None:
                logger.info("update install allowed", channel=record.channel, version=record.version)
        finally:
            self.waiting = None
