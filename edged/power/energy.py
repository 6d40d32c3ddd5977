"""The device energy counter and per-request energy accounting, sampled off the event loop.

Design choice: one background thread (``EnergyMeter.start``) samples every sensor once per
``idle_period_s`` (5 s) and every ``active_period_s`` (0.2 s) while a request runs. A thread,
not an asyncio task, because readers can block for milliseconds (``vcgencmd`` is a subprocess;
INA2xx attributes are I²C transactions) and must never stall the loop. ``begin``/``end`` do no
I/O: they read the counter under a lock and extrapolate from the last sample to "now" (at most
``MAX_EXTRAPOLATION_S``); ``begin`` only wakes the thread so fast sampling starts at once. No
sensor is ever read on the caller's thread, and nothing at all happens per token.
``sample(now)`` is public so tests (and a caller that prefers its own scheduling) can drive it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from edged.power.raspberrypi import CommandRunner
from edged.power.readings import ESTIMATE, Readings
from edged.power.sensors import detect

logger = structlog.get_logger(__name__)

# Idle, power and temperature change slowly and nothing waits on a reading: waking the CPU every
# second only costs battery (issue 16: idle CPU near zero). A request switches to fast sampling at once.
IDLE_PERIOD_S = 5.0
ACTIVE_PERIOD_S = 0.2
# Beyond this the last sample says little about the present; better to undercount than invent.
MAX_EXTRAPOLATION_S = 2 * IDLE_PERIOD_S


class ReadingsSource(Protocol):
    """What the meter samples: ``SensorSet`` in production, a scripted fake in tests."""

    def read(self, now: float) -> Readings: ...


@dataclass(frozen=True)
class EnergyHandle:
    """Opaque start mark of one request, returned by ``begin``."""

    started_at: float
    counters: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class EnergyReport:
    """Device energy over one request's window (idle draw included) and where the figure came from."""

    joules: float
    source: str
    """The sensor name, ``+``-joined names when several measured, or ``estimate`` when any part was."""
    seconds: float
    scope: str = ESTIMATE
    """What the figure covers (``board_input``, ``pmic_rails``, ...); ``mixed`` across sources."""

    @property
    def estimated(self) -> bool:
        return self.source == ESTIMATE


def _name_sources(contributed: list[str]) -> str:
    if ESTIMATE in contributed or not contributed:
        return ESTIMATE
    return "+".join(sorted(contributed))


def _name_scope(contributed: list[str], scopes: dict[str, str]) -> str:
    if ESTIMATE in contributed or not contributed:
        return ESTIMATE
    found = {scopes.get(source, "unknown") for source in contributed}
    return found.pop() if len(found) == 1 else "mixed"


class EnergyMeter:
    """Monotonic device energy counter (J) split by source, plus per-request reports."""

    def __init__(self, sensors: ReadingsSource, *, idle_period_s: float = IDLE_PERIOD_S,
                 active_period_s: float = ACTIVE_PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.sensors = sensors
        self.idle_period_s = idle_period_s
        self.active_period_s = active_period_s
        self.clock = clock
        self._lock = threading.Lock()
        self._sampling = threading.Lock()
        self._per_source: dict[str, float] = {}
        self._scopes: dict[str, str] = {}
        self._last: Readings | None = None
        self._active = 0
        self._failing: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def detect(cls, root: Path | str = "/", runner: CommandRunner | None = None, *,
               idle_period_s: float = IDLE_PERIOD_S, active_period_s: float = ACTIVE_PERIOD_S,
               **detect_options: Any) -> EnergyMeter:
        """Detect the board's sensors (``edged.power.sensors.detect``) and wrap them in a meter.

        The meter is not sampling yet: call ``start()`` (and ``stop()`` at shutdown).
        """
        return cls(detect(root, runner, **detect_options), idle_period_s=idle_period_s,
                   active_period_s=active_period_s)

    @property
    def total_j(self) -> float:
        with self._lock:
            return sum(self._per_source.values())

    def counters(self) -> dict[str, float]:
        """Joules per source since the meter started."""
        with self._lock:
            return dict(self._per_source)

    def latest(self) -> Readings | None:
        """The most recent readings (for the governor and telemetry); no I/O."""
        with self._lock:
            return self._last

    def period_s(self) -> float:
        with self._lock:
            return self.active_period_s if self._active else self.idle_period_s

    def sample(self, now: float | None = None) -> Readings:
        """Read every sensor once and add the energy since the previous sample to the counter."""
        with self._sampling:
            now = self.clock() if now is None else now
            readings = self.sensors.read(now)
            self._report_errors(readings)
            with self._lock:
                previous, self._last = self._last, readings
                if previous is not None and now > previous.at:
                    self._integrate(previous, readings)
            if previous is None or previous.power_source != readings.power_source:
                logger.info("power source", source=readings.power_source, scope=readings.power_scope,
                            estimated=readings.power_estimated)
            return readings

    def _integrate(self, previous: Readings, current: Readings) -> None:
        if current.power_source is None:
            return
        same_source = previous.power_source == current.power_source
        if same_source and current.energy_j is not None and previous.energy_j is not None:
            joules = max(0.0, current.energy_j - previous.energy_j)
        elif current.power_w is not None:
            # Trapezoid within one source; across a source change only the new figure is trusted.
            start_w = previous.power_w if same_source and previous.power_w is not None else current.power_w
            joules = (start_w + current.power_w) / 2 * (current.at - previous.at)
        else:
            return
        self._per_source[current.power_source] = self._per_source.get(current.power_source, 0.0) + joules
        self._scopes[current.power_source] = current.power_scope or "unknown"

    def _report_errors(self, readings: Readings) -> None:
        # Keyed by sensor, not message: messages carry values and would log on every sample.
        failing = {error.split(":", 1)[0] for error in readings.errors}
        for sensor in sorted(failing - self._failing):
            message = next(error for error in readings.errors if error.startswith(sensor))
            logger.warning("sensor read failed", sensor=sensor, error=message)
        for sensor in sorted(self._failing - failing):
            logger.info("sensor recovered", sensor=sensor)
        self._failing = failing

    def _counters_at(self, now: float) -> dict[str, float]:
        counters = dict(self._per_source)
        last = self._last
        if last is not None and last.power_w is not None and last.power_source is not None:
            ahead = min(max(0.0, now - last.at), MAX_EXTRAPOLATION_S)
            counters[last.power_source] = counters.get(last.power_source, 0.0) + last.power_w * ahead
        return counters

    def begin(self, now: float | None = None) -> EnergyHandle:
        """Mark the start of a request and switch to fast sampling."""
        now = self.clock() if now is None else now
        with self._lock:
            self._active += 1
            handle = EnergyHandle(now, tuple(sorted(self._counters_at(now).items())))
        self._wake.set()
        return handle

    def end(self, handle: EnergyHandle, now: float | None = None) -> EnergyReport:
        """Energy used since ``begin``; every request that began must end (use ``try/finally``)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._active = max(0, self._active - 1)
            counters = self._counters_at(now)
            last = self._last
            scopes = dict(self._scopes)
        if last is not None and last.power_source is not None:
            scopes.setdefault(last.power_source, last.power_scope or "unknown")
        started = dict(handle.counters)
        deltas = {source: joules - started.get(source, 0.0) for source, joules in counters.items()}
        contributed = [source for source, joules in deltas.items() if joules > 1e-9]
        if not contributed and last is not None and last.power_source is not None:
            contributed = [last.power_source]
        joules = sum(max(0.0, value) for value in deltas.values())
        return EnergyReport(joules=joules, source=_name_sources(contributed),
                            seconds=max(0.0, now - handle.started_at), scope=_name_scope(contributed, scopes))

    def start(self) -> None:
        """Start the sampling thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="edged-power", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the sampling thread and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception:  # the top of a long-lived loop: log, keep sampling
                logger.exception("power sampling failed")
            self._wake.wait(self.period_s())
            self._wake.clear()
