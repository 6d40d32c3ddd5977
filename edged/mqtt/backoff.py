"""Reconnect delays: full jitter on a doubling cap, and a long fixed wait after refused credentials."""

from __future__ import annotations

import random

from edged.errors import ConfigError


class ReconnectBackoff:
    """Delay before the next connection attempt.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): the n-th delay is
    uniform in [min_s, min(max_s, min_s * 2**(n+1))], so a fleet that lost its broker at the same
    moment does not come back in lock step. The first cap is already 2 * min_s for that reason.
    """

    def __init__(self, min_s: float, max_s: float, auth_retry_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ConfigError("reconnect backoff needs 0 < min_s <= max_s")
        self._min_s = min_s
        self._max_s = max_s
        self._auth_retry_s = auth_retry_s
        self._rng = rng if rng is not None else random.Random()
        self._failures = 0

    @property
    def failures(self) -> int:
        """Attempts that failed since the last reset."""
        return self._failures

    @property
    def auth_retry_s(self) -> float:
        return self._auth_retry_s

    def next_delay(self) -> float:
        """The delay after one more failed or lost connection."""
        # The exponent is capped so a week-long outage cannot overflow the float.
        cap = min(self._max_s, self._min_s * 2.0 ** min(self._failures + 1, 60))
        self._failures += 1
        return self._rng.uniform(self._min_s, cap)

    def auth_delay(self) -> float:
        """The delay after the broker refused our credentials or banned us."""
        self._failures += 1
        return self._auth_retry_s

    def reset(self) -> None:
        """The connection proved stable: start again from the smallest delay."""
        self._failures = 0
