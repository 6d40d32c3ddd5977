"""The one testing seam of the product: hooks the daemon and the depot carry so that tests can reach
states a real run only passes through (a kill -9 between two journal steps, a lossy depot).

Each hook is off unless an ``EDGED_TEST_*`` variable is set; none is reachable from the config file
or a command-line option, and the config loader ignores these variables (``config.NOT_CONFIG_PREFIXES``).
``depot_faults`` holds the depot's chunk faults.
"""

from __future__ import annotations

import asyncio
import os
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
