"""Incremental detokenisation and stop-sequence matching shared by the engines."""

from __future__ import annotations

import codecs
from typing import Callable


class TextStream:
    """Turns token bytes into text pieces, holding back what could still become a stop sequence."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._hold = max((len(s) for s in stops), default=1) - 1
        self._pending = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Text that is safe to emit after these bytes (may be empty); sets `stopped` on a stop match."""
        text = self._decoder.decode(data)
        if not self._stops:
            return text
        self._pending += text
        for stop in self._stops:
            at = self._pending.find(stop)
            if at >= 0:
                self.stopped = True
                out, self._pending = self._pending[:at], ""
                return out
        if len(self._pending) <= self._hold:
            return ""
        cut = len(self._pending) - self._hold
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out

    def deliver(self, data: bytes, sink: Callable[[str], bool]) -> str | None:
        """Feed one token's bytes and pass the safe text on; returns "stop" or "cancelled" to end generation."""
        out = self.feed(data)
        if self.stopped:
            if out:
                sink(out)
            return "stop"
        if out and not sink(out):
            return "cancelled"
        return None

    def close(self, finish_reason: str, sink: Callable[[str], bool]) -> None:
        """At the end: pass on held-back text unless the client cancelled."""
        if finish_reason != "cancelled":
            tail = self.flush()
            if tail:
                sink(tail)

    def flush(self) -> str:
        """The rest of the text at the end of generation."""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return "" if self.stopped else out
