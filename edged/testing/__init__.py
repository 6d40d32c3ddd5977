"""The one testing seam of the product: hooks the daemon and the depot carry so that tests can reach
states a real run only passes through (a kill -9 between two journal steps, a lossy depot).

Each hook is off unless an ``EDGED_TEST_*`` variable is set; none is reachable from the config file
or a command-line option, and the config loader ignores these variables (``config.NOT_CONFIG_PREFIXES``).
``depot_faults`` holds the depot's chunk faults.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import structlog

logger = structlog.get_logger(__name__)

# `EDGED_TEST_PAUSE_UPDATE_AT=<step>` blocks the update right before that journal step is written, or
# with `health_check` while the new model is loaded and on trial (so a test can kill the daemon there).
PAUSE_ENV: Final = "EDGED_TEST_PAUSE_UPDATE_AT"


def update_pause_step() -> str | None:
    """The journal step a test asked the update to stop before, if any."""
    return os.environ.get(PAUSE_ENV) or None


async def pause_forever(step: str) -> None:
    """Never returns: the test kills the daemon here."""
    logger.warning("update paused for test", step=step)
    await asyncio.Event().wait()


# `EDGED_TEST_INSTALL_CLOCK_FILE=<path>`: the install policy reads "now" from that file (an ISO 8601 local
# time such as 2026-12-01T01:30:00, or with an offset) instead of the system clock, every time it looks.
# A test moves the time by rewriting the file and wakes the deferred install with SIGHUP (a reload).
INSTALL_CLOCK_ENV: Final = "EDGED_TEST_INSTALL_CLOCK_FILE"
MAX_CLOCK_FILE_BYTES: Final = 64


def install_clock() -> Callable[[], datetime] | None:
    """The install policy's test clock, if a test asked for one."""
    raw = os.environ.get(INSTALL_CLOCK_ENV)
    if not raw:
        return None
    path = Path(raw)
    logger.warning("install clock from file for test", path=str(path))
    return lambda: read_clock_file(path)


def read_clock_file(path: Path) -> datetime:
    """The time in ``path``; a naive time is local. Raises ValueError (or OSError) for anything else."""
    with path.open("rb") as handle:
        data = handle.read(MAX_CLOCK_FILE_BYTES + 1)
    if len(data) > MAX_CLOCK_FILE_BYTES:
        raise ValueError(f"{path}: a test clock file holds one ISO 8601 time, not {len(data)}+ bytes")
    text = data.decode("ascii", errors="replace").strip()
    try:
        if not text.isprintable():  # fromisoformat lets a trailing NUL through
            raise ValueError(text)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{path}: not an ISO 8601 time such as 2026-12-01T01:30:00") from None
    return moment.astimezone() if moment.tzinfo is None else moment
