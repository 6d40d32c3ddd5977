"""Metrics registry: percentile accuracy, bounded memory, windows, thread safety."""

from __future__ import annotations

import gc
import math
import sys
import threading
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edged.telemetry.metrics import MAX_GAUGES, MAX_LABELS, OTHER_LABEL, LogHistogram, Metrics
from edged.summary import RequestSummary
from tests.fakes import summary

# 8 buckets per octave, geometric middle reported: 2**(1/16) - 1, plus float slack.
RELATIVE_ERROR_BOUND = 2 ** (1 / 16) - 1 + 1e-9


def _nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def _stats(outcome: str = "ok", **values: float | int | str | None) -> RequestSummary:
    return summary(outcome, **values)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_percentiles_of_1_to_1000_are_within_the_documented_bound() -> None:
    histogram = LogHistogram(0.1, 1e7)
    values = [float(v) for v in range(1, 1001)]
    for value in values:
        histogram.record(value)
    summary = histogram.summary()
    assert summary["count"] == 1000
    assert summary["sum"] == pytest.approx(500_500.0)
    assert (summary["min"], summary["max"]) == (1.0, 1000.0)
    for key, q, exact in (("p50", 0.50, 500.0), ("p95", 0.95, 950.0), ("p99", 0.99, 990.0)):
        assert summary[key] is not None
        assert abs(summary[key] - exact) / exact <= RELATIVE_ERROR_BOUND, key  # type: ignore[literal-required]
        assert _nearest_rank(values, q) == exact


def test_constant_data_reports_the_exact_value() -> None:
    histogram = LogHistogram(0.1, 1e7)
    for _ in range(50):
        histogram.record(237.0)
    assert histogram.summary()["p50"] == 237.0
    assert histogram.summary()["p99"] == 237.0


def test_out_of_range_values_report_the_observed_extremes() -> None:
    histogram = LogHistogram(1.0, 1000.0)
    histogram.record(0.25)
    histogram.record(5e6)
    assert histogram.quantile(0.5) == 0.25
    assert histogram.quantile(0.99) == 5e6


def test_nan_is_ignored_and_negative_counts_as_zero() -> None:
    histogram = LogHistogram(1.0, 1000.0)
    histogram.record(math.nan)
    histogram.record(math.inf)
    assert histogram.summary()["count"] == 0
    assert histogram.summary()["p50"] is None
    histogram.record(-3.0)
    assert histogram.summary()["min"] == 0.0


def test_histogram_rejects_a_nonsense_range() -> None:
    with pytest.raises(ValueError):
        LogHistogram(10.0, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.1, max_value=9e6, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]))
def test_any_quantile_is_within_the_bound(values: list[float], q: float) -> None:
    histogram = LogHistogram(0.1, 1e7)
    for value in values:
        histogram.record(value)
    exact = _nearest_rank(values, q)
    estimate = histogram.quantile(q)
    assert estimate is not None
    assert abs(estimate - exact) <= RELATIVE_ERROR_BOUND * exact


def test_record_request_counts_outcomes_rejects_tokens_and_energy() -> None:
    metrics = Metrics()
    metrics.record_request(_stats(queue_time_ms=3.0, time_to_first_token_ms=120.0, duration_ms=900.0,
                                  decode_tokens_per_s=8.0, input_tokens=12, output_tokens=30, energy_j=4.5,
                                  energy_source="ina219"))
    metrics.record_request(_stats("busy", reject_reason="queue_full"))
    metrics.record_reject("envelope:replay")
    snap = metrics.snapshot()
    assert snap["requests"] == {"ok": 1, "busy": 1}
    assert snap["rejects"] == {"queue_full": 1, "envelope:replay": 1}
    assert (snap["input_tokens"], snap["output_tokens"], snap["energy_j"]) == (12, 30, 4.5)
    assert snap["histograms"]["time_to_first_token_ms"]["count"] == 1
    assert snap["histograms"]["time_to_first_token_ms"]["p50"] == 120.0
    # the busy request had no timings: it must not add zeros to the latency histograms
    assert snap["histograms"]["duration_ms"]["count"] == 1


def test_labels_are_sanitised_and_capped() -> None:
    metrics = Metrics()
    metrics.record_reject("queue full/now")
    for index in range(10 * MAX_LABELS):
        metrics.record_reject(f"reason-{index}")
    rejects = metrics.snapshot()["rejects"]
    assert "queue_full_now" in rejects
    assert len(rejects) == MAX_LABELS
    assert rejects[OTHER_LABEL] == 10 * MAX_LABELS - (MAX_LABELS - 2)
    assert sum(rejects.values()) == 10 * MAX_LABELS + 1


def _retained_bytes(root: object) -> int:
    """Bytes of every object reachable from ``root`` (classes, functions and modules excluded)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, (type, types.ModuleType, types.FunctionType,
                                                 types.BuiltinFunctionType)):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        stack.extend(gc.get_referents(item))
    return total


def test_memory_stays_bounded_over_100k_requests() -> None:
    metrics = Metrics()

    def feed(start: int, stop: int) -> None:
        for index in range(start, stop):
            value = float(index % 9973) * 1.7 + 0.5
            metrics.record_request(_stats(f"code{index % 7}", reject_reason=f"reason{index}", queue_time_ms=value,
                                          time_to_first_token_ms=value, duration_ms=value * 3,
                                          decode_tokens_per_s=value / 10, input_tokens=5, output_tokens=9))

    feed(0, 100_000)
    # ~11 KiB of fixed bucket arrays and capped dicts; only the counts' int objects can grow (< 25 KiB).
    assert _retained_bytes(metrics) < 48 * 1024
    snap = metrics.snapshot()
    assert len(snap["rejects"]) == MAX_LABELS
    assert snap["histograms"]["duration_ms"]["count"] == 100_000
    assert snap["output_tokens"] == 900_000


def test_reset_starts_a_new_histogram_window_but_keeps_counters() -> None:
    clock = FakeClock()
    metrics = Metrics(clock=clock)
    metrics.record_request(_stats(time_to_first_token_ms=50.0))
    clock.now += 30.0
    first = metrics.snapshot(reset_histograms=True)
    assert first["window_s"] == 30.0
    assert first["histograms"]["time_to_first_token_ms"]["count"] == 1
    clock.now += 10.0
    second = metrics.snapshot()
    assert second["window_s"] == 10.0
    assert second["histograms"]["time_to_first_token_ms"] == {
        "count": 0, "sum": 0.0, "min": None, "max": None, "p50": None, "p95": None, "p99": None}
    assert second["requests"] == {"ok": 1}
    # a snapshot without reset does not disturb the window
    assert metrics.snapshot()["window_s"] == 10.0


def test_gauges_are_kept_and_capped() -> None:
    metrics = Metrics()
    metrics.set_gauge("queue_depth", 3)
    metrics.set_gauge("queue_depth", 4)
    assert metrics.snapshot()["gauges"] == {"queue_depth": 4.0}
    for index in range(MAX_GAUGES - 1):
        metrics.set_gauge(f"g{index}", index)
    with pytest.raises(ValueError, match="too many gauges"):
        metrics.set_gauge("one_too_many", 1)


def test_concurrent_recording_loses_nothing() -> None:
    metrics = Metrics()

    def worker(outcome: str) -> None:
        for _ in range(2000):
            metrics.record_request(_stats(outcome, duration_ms=10.0, output_tokens=1))

    threads = [threading.Thread(target=worker, args=(f"o{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snap = metrics.snapshot()
    assert snap["requests"] == {f"o{index}": 2000 for index in range(4)}
    assert snap["histograms"]["duration_ms"]["count"] == 8000
    assert snap["output_tokens"] == 8000
