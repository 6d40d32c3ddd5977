"""Progress of a long conversion on stderr: one rewritten line on a terminal, a line per 10% in a log."""

from __future__ import annotations

import sys
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._last_decile = -1
        self._width = 0

    def step(self, label: str) -> None:
        """One unit of work is starting; `label` says which (tensor, layer)."""
        percent = 100 * self.done // self.total
        self.done += 1
        line = f"[{percent:3d}%] {label}"
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        elif percent // 10 != self._last_decile:
            self._last_decile = percent // 10
            self._stream.write(line + "\n")
        self._stream.flush()

    def note(self, message: str) -> None:
        """A step outside the counted units (writing files); always on its own line."""
        if self._tty and self._width:
            self._stream.write("\n")
            self._width = 0
        self._stream.write(message + "\n")
        self._stream.flush()
