"""Incremental detokenisation and stop-sequence matching shared by the engines."""

from __future__ import annotations

import codecs


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

    def flush(self) -> str:
        """The rest of the text at the end of generation."""
        out = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        return "" if self.stopped else out
