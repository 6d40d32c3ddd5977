"""Rejections summarised per interval: a flood of junk must not become a flood of log lines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

DEFAULT_INTERVAL_S = 60.0


class RejectSummary:
    """Logs the first rejection of each kind per interval in full, then only counts.

    When a note arrives after the interval ended (or ``flush()`` is called), one summary line
    gives the counts of everything not logged one by one, so at most ``kinds + 1`` lines are
    written per interval whatever the attacker sends. Thread-safe (paho's thread and asyncio).
    """

    def __init__(self, event: str, logger: Any | None = None, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic, level: str = "info") -> None:
        self._event = event
        self._level = level
        self._logger = logger if logger is not None else structlog.get_logger(__name__)
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._logged: set[str] = set()
        self._suppressed: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def note(self, kind: str, **fields: Any) -> None:
        """One rejection of ``kind``; ``fields`` go into its line if it is the first of the interval."""
        with self._lock:
            self.totals[kind] = self.totals.get(kind, 0) + 1
            summary = self._roll_locked()
            first = kind not in self._logged
            if first:
                self._logged.add(kind)
            else:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
        if summary:
            self._write_summary(summary)
        if first:
            getattr(self._logger, self._level)(self._event, kind=kind, **fields)

    def flush_if_due(self) -> None:
        """The summary of an interval that has ended, when no new note came to write it."""
        with self._lock:
            summary = self._roll_locked()
        if summary:
            self._write_summary(summary)

    def flush(self) -> None:
        """Write the summary of the current interval now, if anything was only counted."""
        with self._lock:
            summary = dict(self._suppressed)
            self._reset_locked()
        if summary:
            self._write_summary(summary)

    def _roll_locked(self) -> dict[str, int]:
        if self._clock() - self._started < self._interval_s:
            return {}
        summary = dict(self._suppressed)
        self._reset_locked()
        return summary

    def _reset_locked(self) -> None:
        self._started = self._clock()
        self._logged.clear()
        self._suppressed.clear()

    def _write_summary(self, counts: dict[str, int]) -> None:
        self._logger.warning(f"{self._event} (summary)", counts=counts, total=sum(counts.values()),
                             interval_s=self._interval_s)


class StepGuard:
    """Runs periodic maintenance steps each in its own guard: one failing step never stops the others.

    A step's first failure is logged with its traceback; while it keeps failing the same way only
    every ``repeat_every``-th failure gets one line (no traceback), and its recovery is logged.
    """

    def __init__(self, event: str, logger: Any | None = None, repeat_every: int = 100) -> None:
        self._event = event
        self._logger = logger if logger is not None else structlog.get_logger(__name__)
        self._repeat_every = repeat_every
        self._failing: dict[str, tuple[str, int]] = {}  # step -> (what failed, how many times)

    def run(self, step: str, body: Callable[[], Any]) -> Any:
        """``body()``, or None if it raised (logged as above)."""
        try:
            result = body()
        except Exception as exc:  # a maintenance step must never take the loop (or its siblings) down
            what = f"{type(exc).__name__}: {str(exc)[:200]}"
            previous, count = self._failing.get(step, ("", 0))
            count = count + 1 if previous == what else 1
            self._failing[step] = (what, count)
            if count == 1:
                self._logger.exception(self._event, step=step)
            elif count % self._repeat_every == 0:
                self._logger.error(self._event, step=step, error=what, failures=count)
            return None
        if self._failing.pop(step, None) is not None:
            self._logger.info(f"{self._event}: recovered", step=step)
        return result
