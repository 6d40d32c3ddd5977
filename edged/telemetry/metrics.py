"""In-process request metrics: labelled counters, gauges and log-bucket histograms; thread-safe, no I/O."""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import Final, TypedDict

import structlog

from edged.summary import RequestSummary

logger = structlog.get_logger(__name__)

# Distinct labels one counter family keeps; later new labels are folded into OTHER_LABEL so a
# client inventing reasons cannot grow memory.
MAX_LABELS: Final = 32
MAX_LABEL_CHARS: Final = 64
OTHER_LABEL: Final = "other"
_UNSAFE_LABEL_CHARS: Final = re.compile(r"[^A-Za-z0-9_.:-]")
MAX_GAUGES: Final = 32
# 8 buckets per octave: each bucket spans a factor 2**(1/8) ~ 1.09, so reporting the geometric middle
# of a bucket is within 2**(1/16) - 1 ~ 4.4 % of any value in it.
BUCKETS_PER_OCTAVE: Final = 8
QUANTILES: Final = (0.50, 0.95, 0.99)


class HistogramSummary(TypedDict):
    """What one histogram reports; percentiles are ``None`` while it is empty."""

    count: int
    sum: float
    min: float | None
    max: float | None
    p50: float | None
    p95: float | None
    p99: float | None


class MetricsSnapshot(TypedDict):
    """A JSON-ready copy of the registry; counters are cumulative since start, histograms cover ``window_s``."""

    requests: dict[str, int]
    rejects: dict[str, int]
    input_tokens: int
    output_tokens: int
    energy_j: float
    gauges: dict[str, float]
    histograms: dict[str, HistogramSummary]
    window_s: float


class LogHistogram:
    """Fixed log-spaced buckets over [lowest, highest): bounded memory, percentiles within ~4.4 %.

    Values below ``lowest`` share one underflow bucket and values at or above ``highest`` one
    overflow bucket; those report the exact observed min/max instead. Not locked: the owner locks.
    """

    def __init__(self, lowest: float, highest: float, buckets_per_octave: int = BUCKETS_PER_OCTAVE) -> None:
        if not 0 < lowest < highest:
            raise ValueError("a histogram needs 0 < lowest < highest")
        self.lowest = lowest
        self.highest = highest
        self._per_octave = buckets_per_octave
        self._regular = math.ceil(math.log2(highest / lowest) * buckets_per_octave)
        # index 0 underflow, 1..regular the log buckets, regular + 1 overflow
        self._counts = [0] * (self._regular + 2)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def reset(self) -> None:
        self._counts = [0] * len(self._counts)
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = -math.inf

    def _index(self, value: float) -> int:
        if value < self.lowest:
            return 0
        if value >= self.highest:
            return self._regular + 1
        index = 1 + int(math.log2(value / self.lowest) * self._per_octave)
        return min(index, self._regular)

    def record(self, value: float) -> None:
        """Add one observation; NaN and infinities are ignored, negatives count as 0."""
        if not math.isfinite(value):
            return
        value = max(value, 0.0)
        self._counts[self._index(value)] += 1
        self.count += 1
        self.total += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float | None:
        """Nearest-rank estimate of quantile ``q`` (0 < q <= 1), clamped to the observed range."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, bucket in enumerate(self._counts):
            seen += bucket
            if seen >= rank:
                return self._estimate(index)
        return self.max

    def _estimate(self, index: int) -> float:
        if index == 0:
            return self.min
        if index == self._regular + 1:
            return self.max
        middle = self.lowest * 2.0 ** ((index - 0.5) / self._per_octave)
        return float(min(max(middle, self.min), self.max))

    def summary(self) -> HistogramSummary:
        p50, p95, p99 = (self.quantile(q) for q in QUANTILES)
        empty = self.count == 0
        return HistogramSummary(count=self.count, sum=self.total, min=None if empty else self.min,
                                max=None if empty else self.max, p50=p50, p95=p95, p99=p99)


class LabelledCounter:
    """Counts per label with a hard cap on distinct labels. Not locked: the owner locks."""

    def __init__(self, max_labels: int = MAX_LABELS) -> None:
        self._max_labels = max_labels
        self._counts: dict[str, int] = {}

    def add(self, label: str, amount: int = 1) -> None:
        if label not in self._counts:
            # Labels become JSON keys and Telegraf field names: keep them short and plain.
            label = _UNSAFE_LABEL_CHARS.sub("_", label[:MAX_LABEL_CHARS]) or OTHER_LABEL
            if label not in self._counts and len(self._counts) >= self._max_labels - 1:
                label = OTHER_LABEL  # one slot stays free for OTHER_LABEL itself
        self._counts[label] = self._counts.get(label, 0) + amount

    def as_dict(self) -> dict[str, int]:
        return dict(self._counts)


def _histograms() -> dict[str, LogHistogram]:
    return {
        "queue_time_ms": LogHistogram(0.1, 1e7),
        "time_to_first_token_ms": LogHistogram(0.1, 1e7),
        "duration_ms": LogHistogram(0.1, 1e7),
        "decode_tokens_per_s": LogHistogram(0.01, 1e5),
    }


class Metrics:
    """The registry the core feeds once per request; ``snapshot`` is what the device record reports."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = LabelledCounter()
        self._rejects = LabelledCounter()
        self._input_tokens = 0
        self._output_tokens = 0
        self._energy_j = 0.0
        self._gauges: dict[str, float] = {}
        self._histograms = _histograms()
        self._window_start = clock()

    def record_request(self, stats: RequestSummary) -> None:
        """Count one finished request; O(1), a handful of additions under one lock."""
        with self._lock:
            self._requests.add(stats.outcome)
            if stats.reject_reason is not None:
                self._rejects.add(stats.reject_reason)
            self._input_tokens += max(stats.input_tokens, 0)
            self._output_tokens += max(stats.output_tokens, 0)
            if stats.energy_j is not None and math.isfinite(stats.energy_j) and stats.energy_j > 0:
                self._energy_j += stats.energy_j
            for name, value in (("queue_time_ms", stats.queue_time_ms),
                                ("time_to_first_token_ms", stats.time_to_first_token_ms),
                                ("duration_ms", stats.duration_ms),
                                ("decode_tokens_per_s", stats.decode_tokens_per_s)):
                if value is not None:
                    self._histograms[name].record(value)

    def record_reject(self, reason: str) -> None:
        """Count a refusal that never became a request (e.g. a dropped replayed envelope)."""
        with self._lock:
            self._rejects.add(reason)

    def set_gauge(self, name: str, value: float) -> None:
        """Set a named gauge; at most ``MAX_GAUGES`` names exist (a new name past that is a bug)."""
        with self._lock:
            if name not in self._gauges and len(self._gauges) >= MAX_GAUGES:
                raise ValueError(f"too many gauges (limit {MAX_GAUGES}); refusing {name!r}")
            self._gauges[name] = float(value)

    def snapshot(self, *, reset_histograms: bool = False) -> MetricsSnapshot:
        """Copy everything out. With ``reset_histograms`` the next window starts now (periodic reports)."""
        with self._lock:
            now = self._clock()
            snap = MetricsSnapshot(
                requests=self._requests.as_dict(),
                rejects=self._rejects.as_dict(),
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                energy_j=self._energy_j,
                gauges=dict(self._gauges),
                histograms={name: hist.summary() for name, hist in self._histograms.items()},
                window_s=max(now - self._window_start, 0.0),
            )
            if reset_histograms:
                for hist in self._histograms.values():
                    hist.reset()
                self._window_start = now
        return snap
