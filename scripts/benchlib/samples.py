"""One request's measurements, and the summaries (median, percentiles) the report shows."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


@dataclass
class RequestSample:
    """What one streamed chat request took, measured on the client side unless said otherwise."""

    prompt_id: str
    ttft_s: float                  # request sent -> first content chunk received
    first_to_last_s: float         # first content chunk -> last content chunk
    completion_tokens: int         # as reported by the target (see token_source)
    finish_reason: str
    prompt_tokens: int | None = None
    cached_prompt_tokens: int | None = None
    token_source: str = "usage"    # where completion_tokens came from: usage | engine | retokenised | ...
    server: dict[str, Any] = field(default_factory=dict)   # the target's own stats (edged object, timings)

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time from the first to the last one."""
        if self.completion_tokens < 2 or self.first_to_last_s <= 0:
            return None
        return (self.completion_tokens - 1) / self.first_to_last_s

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "decode_tokens_per_s": self.decode_tokens_per_s}


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); one value is its own percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Summary:
    count: int
    median: float
    p10: float
    p90: float
    minimum: float
    maximum: float

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Summary | None":
        kept = [v for v in values if v is not None and not math.isnan(v)]
        if not kept:
            return None
        return cls(count=len(kept), median=statistics.median(kept), p10=percentile(kept, 0.10),
                   p90=percentile(kept, 0.90), minimum=min(kept), maximum=max(kept))


def summarize_requests(samples: Sequence[RequestSample]) -> dict[str, Any]:
    """Per-metric summaries of a list of requests (JSON-ready)."""
    ttft = Summary.of([s.ttft_s * 1000 for s in samples])
    rate = Summary.of([s.decode_tokens_per_s for s in samples])
    tokens = Summary.of([float(s.completion_tokens) for s in samples])
    return {
        "requests": len(samples),
        "ttft_ms": asdict(ttft) if ttft else None,
        "decode_tokens_per_s": asdict(rate) if rate else None,
        "completion_tokens": asdict(tokens) if tokens else None,
        "finish_reasons": sorted({s.finish_reason for s in samples}),
    }
