"""Per-device bandwidth at the depot: pull requests carry no signature, so anyone can send one."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

# A Pi on Wi-Fi downloads well under this; one burst covers the largest single pull (64 x 1 MiB).
DEFAULT_DEVICE_RATE_BYTES_S: Final = 16 * 1024 * 1024
DEFAULT_DEVICE_BURST_BYTES: Final = 64 * 1024 * 1024
MAX_TRACKED_DEVICES: Final = 100_000


class DeviceBudget:
    """A token bucket of bytes per device id: at most ``rate`` bytes/s after a ``burst``.

    A 93-byte pull from anyone used to make the depot send 64 MiB to a device; now every pull for
    one device draws on that device's budget, so spoofed pulls cannot send it more than ``rate``
    bytes per second in all. What is not affordable is not sent; the device asks again.
    """

    def __init__(self, rate_bytes_s: float = DEFAULT_DEVICE_RATE_BYTES_S, burst_bytes: float = DEFAULT_DEVICE_BURST_BYTES,
                 clock: Callable[[], float] = time.monotonic, max_devices: int = MAX_TRACKED_DEVICES) -> None:
        if rate_bytes_s <= 0 or burst_bytes <= 0:
            raise ValueError("the device rate and burst must be positive")
        self.rate = rate_bytes_s
        self.burst = burst_bytes
        self._clock = clock
        self._max_devices = max_devices
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # device -> (tokens, at)

    def take(self, device_id: str, unit_bytes: int, units: int) -> int:
        """How many of ``units`` pieces of ``unit_bytes`` this device may be sent now (they are charged)."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.pop(device_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            allowed = min(units, int(tokens // unit_bytes)) if unit_bytes > 0 else units
            self._buckets[device_id] = (tokens - allowed * unit_bytes, now)
            while len(self._buckets) > self._max_devices:
                self._buckets.popitem(last=False)  # the least recently seen comes back full: errs to serving
        return allowed
