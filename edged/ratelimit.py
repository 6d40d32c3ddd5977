"""A per-key token bucket: the core limits local clients with it, the gateway sealed ones.

It lives on its own (not with the allow-list) so that the core needs nothing from the security package.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Final

DEFAULT_RATE_LIMITED_CLIENTS: Final = 4096


class RateLimiter:
    """``allow(client_key, limit, now)``: at most ``limit`` requests per minute, bursts up to ``limit``.

    Buckets are kept in least-recently-used order and the oldest is dropped beyond
    ``max_clients``; a dropped bucket comes back full, which errs towards admitting.
    """

    def __init__(self, max_clients: int = DEFAULT_RATE_LIMITED_CLIENTS) -> None:
        if max_clients < 1:
            raise ValueError("max_clients must be at least 1")
        self.max_clients = max_clients
        # client_key -> (tokens, last refill time)
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def allow(self, client_key: bytes, limit: int | None, now: float) -> bool:
        """Take one token for ``client_key``; ``limit`` None means unlimited (nothing is stored)."""
        if limit is None:
            return True
        if limit < 1:
            return False
        with self._lock:
            tokens, last = self._buckets.pop(client_key, (float(limit), now))
            # A clock that steps back must not mint tokens or go negative.
            elapsed = max(0.0, now - last)
            tokens = min(float(limit), tokens + elapsed * limit / 60.0)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client_key] = (tokens, max(now, last))
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return allowed
