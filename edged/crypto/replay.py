"""Replay cache for admitted requests: (client_pub, req_id) -> expiry; bounded and fail-closed."""

from __future__ import annotations

import enum
import heapq
import threading
from typing import Final

import structlog

logger = structlog.get_logger(__name__)

DEFAULT_MAX_ENTRIES: Final = 100_000


class ReplayVerdict(enum.Enum):
    """The outcome of one check-and-insert."""

    FRESH = "fresh"
    REPLAY = "replay"
    FULL = "full"
    CLIENT_FULL = "client_full"  # this client holds its whole share; other clients are not affected


class ReplayCache:
    """Remembers admitted requests until they can no longer pass the timestamp window.

    Check-and-insert is atomic under one lock, so the same request arriving twice at the same
    moment is admitted once. When the cache is full after purging expired entries, new requests
    are refused (fail closed) rather than evicting entries that still guard against replay. One
    client may hold at most ``max_per_client`` entries, so one allowed client cannot fill the
    cache and lock the others out.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, max_per_client: int | None = None) -> None:
        if max_entries < 1 or (max_per_client is not None and max_per_client < 1):
            raise ValueError("max_entries and max_per_client must be at least 1")
        self.max_entries = max_entries
        self.max_per_client = max_entries if max_per_client is None else min(max_per_client, max_entries)
        self._per_client: dict[bytes, int] = {}
        self._expiry: dict[tuple[bytes, bytes], float] = {}
        # Expiries are not monotonic (the TTL depends on the clock policy), hence a heap.
        self._heap: list[tuple[float, tuple[bytes, bytes]]] = []
        self._lock = threading.Lock()
        self._full_logged = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry)

    def check_and_insert(self, client_pub: bytes, req_id: bytes, *, now: float, ttl_s: float) -> ReplayVerdict:
        """FRESH (and remembered until ``now + ttl_s``), REPLAY if seen and unexpired, FULL or CLIENT_FULL."""
        key = (client_pub, req_id)
        with self._lock:
            self._purge(now)
            if key in self._expiry:
                return ReplayVerdict.REPLAY
            if len(self._expiry) >= self.max_entries:
                if not self._full_logged:
                    logger.warning("replay cache full, rejecting new requests", max_entries=self.max_entries)
                    self._full_logged = True
                return ReplayVerdict.FULL
            self._full_logged = False
            held = self._per_client.get(client_pub, 0)
            if held >= self.max_per_client:
                return ReplayVerdict.CLIENT_FULL
            self._per_client[client_pub] = held + 1
            expiry = now + ttl_s
            self._expiry[key] = expiry
            heapq.heappush(self._heap, (expiry, key))
            return ReplayVerdict.FRESH

    def purge(self, now: float) -> int:
        """Drop expired entries; returns how many are left."""
        with self._lock:
            self._purge(now)
            return len(self._expiry)

    def _purge(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] < now:
            expiry, key = heapq.heappop(heap)
            if self._expiry.get(key) == expiry:
                del self._expiry[key]
                left = self._per_client[key[0]] - 1
                if left:
                    self._per_client[key[0]] = left
                else:
                    del self._per_client[key[0]]
