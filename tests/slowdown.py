"""How long the test helpers wait, stretched under emulation.

EDGED_TEST_TIME_SCALE=8 (set by scripts/test-arm64, which runs the suite under QEMU at a tenth of
native speed) makes every deadline the helpers wait for eight times longer. Only how long a test
waits for something to happen changes, never what it asserts; a real hang still ends in a failure.
"""

from __future__ import annotations

import os


def _scale() -> float:
    raw = os.environ.get("EDGED_TEST_TIME_SCALE", "1")
    try:
        value = float(raw)
    except ValueError:
        raise RuntimeError(f"EDGED_TEST_TIME_SCALE={raw!r} is not a number (e.g. 8)") from None
    if not 1 <= value <= 100:
        raise RuntimeError(f"EDGED_TEST_TIME_SCALE={raw!r} must be between 1 and 100")
    return value


SCALE = _scale()


def scaled(seconds: float) -> float:
    """A deadline of `seconds` on a native machine, for this run."""
    return seconds * SCALE


def daemon_env() -> dict[str, str]:
    """Environment for `edged serve` in tests: under emulation its default request deadline (120 s)
    stretches too, up to the 600 s largest deadline, so queued requests are not cut short. A test's
    own env (or a request's own deadline) still wins."""
    if SCALE == 1:
        return {}
    return {"EDGED_LIMITS__DEFAULT_DEADLINE_MS": str(int(min(scaled(120_000), 600_000)))}
