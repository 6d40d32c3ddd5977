"""Process-wide allocator policy, set once by the daemon at start.

glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB on
64-bit), so after the first few prefix states (7.4 MB each for the demo model) are saved or loaded,
later ones come from the heap and stay in the RSS once freed: +36 MiB after eight new system
prompts, measured. A fixed threshold keeps every block of a few MiB or more in its own mapping,
which goes back to the kernel on free. Small allocations are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

import structlog

logger = structlog.get_logger(__name__)

M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES: Final = 4 * 1024 * 1024


def release_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold``; False (nothing changed) on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:  # musl's mallopt is a stub that refuses
        logger.debug("malloc mmap threshold not set", threshold=threshold)
        return False
    return True
