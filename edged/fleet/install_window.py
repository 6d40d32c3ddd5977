"""The device's install window (``[updates] install_window = "02:00-05:00"``): parsing and local-time arithmetic.

Times are wall-clock times in the device's local time zone, because that is what an operator
means by "02:00". A window may cross midnight (``22:00-05:00``). The arithmetic works on aware
datetimes and measures durations in UTC, so a daylight-saving change shifts nothing: a window is
open when the local wall clock is inside it, whatever the offset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Final

MAX_WINDOW_TEXT: Final = 32
_WINDOW: Final = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")


@dataclass(frozen=True, slots=True)
class InstallWindow:
    """[start, end) in minutes after local midnight; ``end < start`` crosses midnight."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"

    @property
    def opens_at(self) -> str:
        return _hhmm(self.start)

    def contains(self, local: datetime) -> bool:
        """Is the local wall-clock time ``local`` inside the window?"""
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end  # crosses midnight

    def seconds_until_open(self, now: datetime) -> float:
        """Seconds from the aware ``now`` until the window next opens (0 when it is open)."""
        if now.tzinfo is None:
            raise ValueError("seconds_until_open needs an aware datetime (local time with its zone)")
        if self.contains(now):
            return 0.0
        opening = time(self.start // 60, self.start % 60)
        for days in (0, 1, 2):  # today's opening, else tomorrow's; the third day is only a guard
            candidate = datetime.combine(now.date() + timedelta(days=days), opening, tzinfo=now.tzinfo)
            # Subtract in UTC: aware datetimes of one zone subtract as wall times, which is wrong across DST.
            left = (candidate.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
            if left > 0:
                return left
        raise AssertionError("an opening within two days always exists")  # pragma: no cover


def parse_window(text: str) -> InstallWindow:
    """``HH:MM-HH:MM`` (24-hour, two digits each, 00:00 to 23:59); ValueError saying what is wrong."""
    if len(text) > MAX_WINDOW_TEXT:
        raise ValueError(f"must be HH:MM-HH:MM (e.g. 02:00-05:00), not {len(text)} characters")
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError("must be HH:MM-HH:MM in 24-hour local time, e.g. 02:00-05:00 or 22:00-05:00")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    for hours, minutes, which in ((start_h, start_m, "start"), (end_h, end_m, "end")):
        if hours > 23 or minutes > 59:
            raise ValueError(f"the {which} time {hours:02d}:{minutes:02d} is not a time of day "
                             "(00:00 to 23:59; for a window up to midnight end it at 00:00)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise ValueError("start and end are equal: the window would be empty (leave install_window out "
                         "to install at any time)")
    return InstallWindow(start, end)


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
