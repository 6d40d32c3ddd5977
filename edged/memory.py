"""Process-wide memory policy: the allocator's (set once at start) and pages given back while idle.

glibc's malloc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB on
64-bit), so after the first few prefix states (7.4 MB each for the demo model) are saved or loaded,
later ones come from the heap and stay in the RSS once freed: +36 MiB after eight new system
prompts, measured. A fixed threshold keeps every block of a few MiB or more in its own mapping,
which goes back to the kernel on free. Small allocations are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Final

import structlog

logger = structlog.get_logger(__name__)

M_MMAP_THRESHOLD: Final = -3  # glibc's malloc.h
MADV_DONTNEED: Final = 4  # asm-generic/mman-common.h, the same on x86-64 and aarch64
MMAP_THRESHOLD_BYTES: Final = 4 * 1024 * 1024


def release_large_blocks(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold``; False (nothing changed) on another C library."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt, nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:  # musl's mallopt is a stub that refuses
        logger.debug("malloc mmap threshold not set", threshold=threshold)
        return False
    return True


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def drop_mapped_pages(path: Path, maps: Path = Path("/proc/self/maps")) -> int:
    """Take `path`'s mapped pages out of this process (MADV_DONTNEED), keeping the mappings; the bytes.

    For a read-only shared file mapping (llama.cpp maps a GGUF file MAP_SHARED, PROT_READ) nothing is
    lost: the pages stay in the page cache while memory allows and fault back in on the next read,
    so the RSS falls now and the next request needs no load. Call only while nothing reads them.
    """
    target = str(path.resolve())
    try:
        lines = maps.read_text().splitlines()
    except OSError:
        return 0
    madvise = _libc().madvise
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    dropped = 0
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[5] != target or "w" in fields[1]:
            continue  # not the file, or a writable mapping (its pages may be the only copy)
        start, end = (int(part, 16) for part in fields[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += end - start
        else:
            logger.debug("mapped pages not dropped", errno=ctypes.get_errno())
    return dropped
