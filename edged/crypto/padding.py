"""Length hiding: pad a JSON object with a ``"pad"`` string so its encoding fills a size bucket."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

PAD_FIELD: Final = "pad"
DEFAULT_MIN_BUCKET: Final = 256
# Above this, buckets grow linearly: doubling a 64 KiB body would waste too much airtime.
DEFAULT_LINEAR_STEP: Final = 64 * 1024


def bucket_size(length: int, *, min_bucket: int = DEFAULT_MIN_BUCKET,
                linear_step: int = DEFAULT_LINEAR_STEP) -> int:
    """Smallest bucket >= length: powers of two from ``min_bucket``, then multiples of ``linear_step``."""
    if length < 0 or min_bucket < 1 or linear_step < 1:
        raise ValueError("length must be >= 0 and bucket sizes >= 1")
    if length > linear_step:
        return -(-length // linear_step) * linear_step
    bucket = min_bucket
    while bucket < length:
        bucket *= 2
    return bucket


def _compact(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def pad_json(obj: Mapping[str, Any], *, min_bucket: int = DEFAULT_MIN_BUCKET,
             linear_step: int = DEFAULT_LINEAR_STEP) -> bytes:
    """Compact UTF-8 JSON of ``obj`` plus a ``"pad"`` field of spaces, exactly a bucket long.

    Used for request bodies (the device ignores ``pad``, spec section 3) and for response chunk
    objects (clients ignore ``pad``). ``obj`` must not already have a ``pad`` key.
    """
    if PAD_FIELD in obj:
        raise ValueError(f"the object already has a {PAD_FIELD!r} field")
    unpadded = _compact({**obj, PAD_FIELD: ""})
    target = bucket_size(len(unpadded), min_bucket=min_bucket, linear_step=linear_step)
    # Spaces are one byte each in UTF-8 and need no JSON escaping, so the length is exact.
    return _compact({**obj, PAD_FIELD: " " * (target - len(unpadded))})
