"""The CLI's own failure modes: a reader that goes away is not an error worth a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_closed_pipe_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # `edged profiles list | head -0`: nobody reads
    try:
        done = subprocess.run([sys.executable, "-m", "edged", "profiles", "list"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
