"""Streaming SHA-256 of model files, shared by the operator tools, the depot and the device."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Final

HASH_BLOCK: Final = 1024 * 1024


def sha256_file(path: Path, *, limit: int | None = None,
                on_progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """(bytes read, hex digest) of `path`, read in 1 MiB blocks.

    With `limit` reading stops once more than `limit` bytes were seen, so an oversized file is told
    apart without hashing all of it. `on_progress(bytes so far)` is called after every block.
    """
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as source:
        while block := source.read(HASH_BLOCK):
            digest.update(block)
            done += len(block)
            if on_progress is not None:
                on_progress(done)
            if limit is not None and done > limit:
                break
    return done, digest.hexdigest()
