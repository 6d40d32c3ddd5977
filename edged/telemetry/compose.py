"""Build telemetry records from what the core, the sampler, the spool and the power code know."""

from __future__ import annotations

import structlog

from edged.state import PowerState
from edged.summary import RequestSummary
from edged.telemetry.metrics import HistogramSummary, MetricsSnapshot
from edged.telemetry.records import DeviceRecord, LatencySummary, RequestRecord
from edged.telemetry.sampler import ProcessSample
from edged.telemetry.spool import SpoolStats

__all__ = ["PowerState", "device_record", "request_record"]

logger = structlog.get_logger(__name__)


def request_record(summary: RequestSummary, *, device_id: str, time_unix_ms: int) -> RequestRecord:
    """The ``edged.request`` record of one finished request; raises ``ValidationError`` on bad figures."""
    measured = summary.ok  # a failed request's queue, latency and energy figures are not its own
    energy = summary.energy_j if measured else None
    per_token = None
    if energy is not None and summary.output_tokens > 0:
        per_token = energy / summary.output_tokens
    return RequestRecord(
        device_id=device_id, time_unix_ms=time_unix_ms, outcome=summary.outcome,  # type: ignore[arg-type]
        transport=summary.transport, priority=summary.priority, profile=summary.profile,
        reject_reason=summary.reject_reason, queue_time_ms=summary.queue_time_ms if measured else None,
        time_to_first_token_ms=summary.time_to_first_token_ms if measured else None,
        duration_ms=summary.duration_ms, decode_tokens_per_s=summary.decode_tokens_per_s if measured else None,
        input_tokens=summary.input_tokens, output_tokens=summary.output_tokens, energy_j=energy,
        energy_j_per_token=per_token,
        energy_source=summary.energy_source if energy is not None else None,
        energy_scope=summary.energy_scope if energy is not None else None,
    )


def _summary(histogram: HistogramSummary) -> LatencySummary:
    return LatencySummary(count=histogram["count"], sum=histogram["sum"], p50=histogram["p50"],
                          p95=histogram["p95"], p99=histogram["p99"])


def device_record(*, device_id: str, time_unix_ms: int, uptime_s: float, sample: ProcessSample,
                  metrics: MetricsSnapshot, spool: SpoolStats, power: PowerState, queue_depth: int,
                  profile: str, governor_reason: str) -> DeviceRecord:
    """The periodic ``edged.device`` record.

    ``uptime_s`` is passed in (the daemon's own clock) so a missing /proc still yields a record;
    ``metrics`` should come from ``Metrics.snapshot(reset_histograms=True)`` so percentiles cover
    the time since the previous record.
    """
    histograms = metrics["histograms"]
    has_energy = power.energy_j is not None or power.power_w is not None
    return DeviceRecord(
        device_id=device_id, time_unix_ms=time_unix_ms, uptime_s=uptime_s,
        memory_rss_bytes=sample.rss_bytes, memory_rss_peak_bytes=sample.rss_peak_bytes,
        system_memory_total_bytes=sample.memory_total_bytes,
        system_memory_available_bytes=sample.memory_available_bytes,
        process_cpu_utilization=sample.process_cpu_utilization,
        system_cpu_utilization=sample.system_cpu_utilization,
        temperature_cel=power.temperature_cel, temperature_source=power.temperature_source,
        throttled_flags=power.throttled_flags, power_w=power.power_w, energy_j=power.energy_j,
        energy_source=power.energy_source if has_energy else None,
        energy_scope=power.energy_scope if has_energy else None,
        queue_depth=queue_depth, requests_by_outcome=metrics["requests"], rejects_by_reason=metrics["rejects"],
        input_tokens_total=metrics["input_tokens"], output_tokens_total=metrics["output_tokens"],
        queue_time_ms=_summary(histograms["queue_time_ms"]),
        time_to_first_token_ms=_summary(histograms["time_to_first_token_ms"]),
        duration_ms=_summary(histograms["duration_ms"]),
        decode_tokens_per_s=_summary(histograms["decode_tokens_per_s"]),
        latency_window_s=metrics["window_s"], profile=profile, governor_reason=governor_reason,
        spool_pending=spool.pending, spool_dropped=spool.dropped_total, spool_recoveries=spool.recoveries_total,
        spool_recovered=spool.recovered_from_corruption,
    )
