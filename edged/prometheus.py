"""Request metrics in the Prometheus text exposition format (version 0.0.4), rendered here.

It lives outside edged/telemetry (whose package pulls in the MQTT record and spool code) so that
the HTTP side costs little to import. Rendering ourselves keeps the daemon free of another runtime
dependency: the format is a few lines of text per family, and the tests parse our output with
prometheus_client's own parser. Counters
and histograms are cumulative since start (Prometheus computes rates); the device gauges are read
at scrape time from a `DeviceGauges` snapshot, so nothing here polls.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Final, Iterable

from edged.summary import RequestSummary

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
# Label values come from wire codes and transports: a bug must not grow the page without bound.
MAX_SERIES: Final = 64

# Seconds, from a cached prompt on a fast board to a long answer on a slow one.
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
RATE_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 500.0)
THROTTLE_FLAGS: Final = ("under_voltage", "freq_capped", "throttled", "soft_temp_limit")


class Histogram:
    """Cumulative Prometheus buckets; not locked, the registry locks."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            return
        index = len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                index = i
                break
        self.counts[index] += 1
        self.total += value


@dataclass(frozen=True)
class DeviceGauges:
    """What the device says about itself at scrape time; `None` means unknown, and is left out."""

    version: str
    device_id: str
    model_name: str | None
    model_format: str | None
    model_state: str                      # ready, loading, swapping, unavailable, unloaded
    profile: str
    profiles: tuple[str, ...]
    queue_waiting: int
    queue_running: int
    queue_capacity: int
    energy_j_by_source: dict[str, float] = field(default_factory=dict)
    power_w: float | None = None
    power_source: str | None = None
    temperature_c: float | None = None
    throttled: dict[str, bool] | None = None
    mqtt_connected: bool | None = None    # None: no [mqtt]
    spool_pending_messages: int | None = None
    spool_pending_bytes: int | None = None
    spool_dropped_total: int | None = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    value = float(value)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        if labels:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{inner}}} {_number(value)}")
        else:
            self.lines.append(f"{name} {_number(value)}")

    def one(self, name: str, kind: str, help_text: str, value: float | None,
            labels: dict[str, str] | None = None) -> None:
        if value is None:
            return
        self.family(name, kind, help_text)
        self.sample(name, value, labels)

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.family(name, "histogram", help_text)
        running = 0
        for bound, count in zip((*hist.bounds, math.inf), hist.counts):
            running += count
            self.sample(f"{name}_bucket", running, {"le": repr(float(bound)) if math.isfinite(bound) else "+Inf"})
        self.sample(f"{name}_sum", hist.total)
        self.sample(f"{name}_count", running)


class PrometheusMetrics:
    """Fed by the core's request and reject observers; `render` is what GET /metrics returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._rejects: dict[str, int] = {}
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._queue = Histogram(LATENCY_BUCKETS_S)
        self._ttft = Histogram(LATENCY_BUCKETS_S)
        self._total = Histogram(LATENCY_BUCKETS_S)
        self._rate = Histogram(RATE_BUCKETS)

    def on_request(self, summary: RequestSummary) -> None:
        with self._lock:
            key = (summary.transport, summary.outcome)
            if key not in self._requests and len(self._requests) >= MAX_SERIES:
                key = (summary.transport, "other")  # outcomes are wire codes; a bug must not grow memory
            self._requests[key] = self._requests.get(key, 0) + 1
            self._prompt_tokens += max(summary.input_tokens, 0)
            self._completion_tokens += max(summary.output_tokens, 0)
            if summary.ok:
                for hist, ms in ((self._queue, summary.queue_time_ms), (self._ttft, summary.time_to_first_token_ms),
                                 (self._total, summary.duration_ms)):
                    if ms is not None:
                        hist.observe(ms / 1000)
                rate = summary.decode_tokens_per_s
                if summary.output_tokens > 1 and rate:
                    self._rate.observe(rate)

    def on_reject(self, code: str) -> None:
        with self._lock:
            if code not in self._rejects and len(self._rejects) >= MAX_SERIES:
                code = "other"
            self._rejects[code] = self._rejects.get(code, 0) + 1

    def render(self, device: DeviceGauges) -> str:
        out = _Out()
        with self._lock:
            out.family("edged_requests_total", "counter", "Admitted requests that finished, by transport and outcome "
                       "(ok or the wire error code).")
            for (transport, outcome), count in sorted(self._requests.items()):
                out.sample("edged_requests_total", count, {"transport": transport, "outcome": outcome})
            out.family("edged_requests_rejected_total", "counter",
                       "Requests refused at admission, by wire error code (busy, bad_request, ...).")
            for code, count in sorted(self._rejects.items()):
                out.sample("edged_requests_rejected_total", count, {"code": code})
            out.one("edged_prompt_tokens_total", "counter", "Prompt tokens of finished requests.", self._prompt_tokens)
            out.one("edged_completion_tokens_total", "counter", "Generated tokens of finished requests.",
                    self._completion_tokens)
            out.histogram("edged_request_queue_wait_seconds", "Admission to start of generation (ok requests).",
                          self._queue)
            out.histogram("edged_time_to_first_token_seconds", "Admission to the first token (ok requests).",
                          self._ttft)
            out.histogram("edged_request_duration_seconds", "Admission to the last token (ok requests).",
                          self._total)
            out.histogram("edged_decode_rate_tokens_per_second", "Tokens after the first over the time after "
                          "the first (ok requests with 2+ tokens).", self._rate)
        self._device(out, device)
        return "\n".join(out.lines) + "\n"

    @staticmethod
    def _device(out: _Out, d: DeviceGauges) -> None:
        out.one("edged_build_info", "gauge", "Always 1; the labels name the version and device.", 1,
                {"version": d.version, "device_id": d.device_id})
        if d.model_name is not None:
            out.one("edged_model_info", "gauge", "Always 1; the labels name the served model.", 1,
                    {"model": d.model_name, "format": d.model_format or "unknown"})
        out.family("edged_model_state", "gauge", "1 for the model's current state, 0 for the others.")
        for state in ("ready", "loading", "swapping", "unavailable", "unloaded"):
            out.sample("edged_model_state", 1 if d.model_state == state else 0, {"state": state})
        out.family("edged_profile_active", "gauge", "1 for the active power profile, 0 for the others.")
        for name in sorted({*d.profiles, d.profile}):
            out.sample("edged_profile_active", 1 if name == d.profile else 0, {"profile": name})
        out.one("edged_queue_depth", "gauge", "Requests waiting in the queue.", d.queue_waiting)
        out.one("edged_requests_running", "gauge", "Requests generating now (0 or 1).", d.queue_running)
        out.one("edged_queue_capacity", "gauge", "Queue length the active profile admits.", d.queue_capacity)
        if d.energy_j_by_source:
            out.family("edged_energy_joules_total", "counter", "Energy measured (or estimated) since start, by source.")
            for source, joules in sorted(d.energy_j_by_source.items()):
                out.sample("edged_energy_joules_total", joules, {"source": source})
        out.one("edged_power_watts", "gauge", "Latest power reading.", d.power_w,
                {"source": d.power_source or "unknown"})
        out.one("edged_cpu_temperature_celsius", "gauge", "Hottest thermal zone.", d.temperature_c)
        if d.throttled is not None:
            out.family("edged_throttled", "gauge", "Firmware throttling flags now (1 = active).")
            for flag in THROTTLE_FLAGS:
                out.sample("edged_throttled", 1 if d.throttled.get(flag) else 0, {"flag": flag})
        if d.mqtt_connected is not None:
            out.one("edged_mqtt_connected", "gauge", "1 while the broker link is up.", 1 if d.mqtt_connected else 0)
        out.one("edged_telemetry_spool_messages", "gauge", "Telemetry records waiting in the spool.",
                d.spool_pending_messages)
        out.one("edged_telemetry_spool_bytes", "gauge", "Bytes of telemetry waiting in the spool.",
                d.spool_pending_bytes)
        out.one("edged_telemetry_spool_dropped_total", "counter", "Telemetry records evicted from a full spool.",
                d.spool_dropped_total)


def metric_names(text: str) -> Iterable[str]:
    """The family names of a rendered page (for docs checks)."""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            yield line.split()[2]
