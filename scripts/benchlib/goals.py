"""edged's performance targets, each checked against this run: measured value, target, met or not.

A target whose inputs were not measured in this run (a target or scenario deselected, skipped or
failed) is "not measured", never "met". Extension rows (ONNX engine, model-update transfer) have no
target yet and show what was measured, or "not measured".
"""

from __future__ import annotations

from typing import Any, Callable

from benchlib.compare import EDGED, EDGED_MQTT, LLAMA_BENCH, LLAMA_SERVER, _get, find_ratio
from benchlib.machine import human_bytes

MET, NOT_MET, NOT_MEASURED, NO_TARGET = "met", "NOT met", "not measured", "measured (no target yet)"
TRANSFER_TARGET_BYTES_PER_S = 20e6  # issue 6: at least 20 MB/s over a local mosquitto
RSS_HEADROOM_BYTES = 40_000_000    # "llama-server + 40 MB": decimal megabytes, the stricter reading
SEALING_LIMIT_US = 1000.0
WYOMING_ADDED_LIMIT_MS = 5.0  # issue 14: first handled-chunk after the core's first token
IDLE_CPU_LIMIT = 0.10  # issue 16: ≤ 0.10 % of one core over 60 s, MQTT connected, telemetry on


def _goal(name: str, value: float | None, limit: float, at_least: bool, show: Callable[[float], str],
          target: str) -> dict[str, Any]:
    if value is None:
        status = NOT_MEASURED
    else:
        status = MET if (value >= limit if at_least else value <= limit) else NOT_MET
    return {"goal": name, "measured": NOT_MEASURED if value is None else show(value), "target": target,
            "status": status, "value": value, "limit": limit}


def _ratio_value(comparisons: dict[str, Any], target: str, baseline: str) -> float | None:
    found = find_ratio(comparisons, target, baseline, "decode tok/s (median)")
    return found["ratio"] if found else None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    comparisons, targets = results["comparisons"], results["targets"]
    rows, added = comparisons["rows"], comparisons["added_ttft"]

    def row(name: str, key: str) -> Any:
        return (rows.get(name) or {}).get(key)

    times = lambda v: f"{v:.2f}x"  # noqa: E731
    ms = lambda v: f"{v:.2f} ms"  # noqa: E731
    percent = lambda v: f"{v:.2f} %"  # noqa: E731
    edged_rss, server_rss = row(EDGED, "peak_rss_bytes"), row(LLAMA_SERVER, "peak_rss_bytes")
    rss_over = edged_rss - server_rss if edged_rss is not None and server_rss is not None else None
    sealing = _get(targets.get("seal-cost"), "scenarios", "seal-cost", "per_request_us")
    edged_ready, server_ready = row(EDGED, "ready_s"), row(LLAMA_SERVER, "ready_s")
    ready_ratio = edged_ready / server_ready if edged_ready is not None and server_ready else None
    goals = [
        _goal("decode via socket / llama-server", _ratio_value(comparisons, EDGED, LLAMA_SERVER), 1.00, True,
              times, "≥ 1.00x"),
        _goal("decode via socket / llama-bench tg", _ratio_value(comparisons, EDGED, LLAMA_BENCH), 0.97, True,
              times, "≥ 0.97x"),
        _goal("decode via MQTT, sealed / llama-server", _ratio_value(comparisons, EDGED_MQTT, LLAMA_SERVER), 0.95,
              True, times, "≥ 0.95x"),
        _goal("TTFT added over in-process, socket (median)", (added.get(EDGED) or {}).get("median_added_ms"), 3.0,
              False, ms, "≤ 3 ms"),
        _goal("TTFT added over in-process, MQTT sealed (median)", (added.get(EDGED_MQTT) or {}).get("median_added_ms"),
              10.0, False, ms, "≤ 10 ms"),
        _goal("start → ready (socket) / llama-server's", ready_ratio, 1.0, False,
              lambda v: f"{v:.2f}x ({row(EDGED, 'ready_s'):.2f} s vs {row(LLAMA_SERVER, 'ready_s'):.2f} s)", "≤ 1.00x"),
        _goal("peak RSS over llama-server's", rss_over, RSS_HEADROOM_BYTES, False,
              lambda v: f"{'+' if v >= 0 else '−'}{human_bytes(abs(int(v)))} ({human_bytes(edged_rss)} vs "
                        f"{human_bytes(server_rss)})", "≤ +40 MB (38.1 MiB)"),
        _goal("idle CPU, socket daemon", row(EDGED, "idle_cpu_percent"), IDLE_CPU_LIMIT, False, percent,
              "≤ 0.10 % of a core"),
        _goal("idle CPU, MQTT connected, telemetry on", row(EDGED_MQTT, "idle_cpu_percent"), IDLE_CPU_LIMIT, False,
              percent, "≤ 0.10 % of a core"),
        _goal("idle CPU, ONNX engine (socket)", row("edged-onnx", "idle_cpu_percent"), IDLE_CPU_LIMIT, False, percent,
              "≤ 0.10 % of a core"),
        _goal("prefix cache: fresh / reused TTFT (socket)", row(EDGED, "prefix_ratio"), 3.0, True, times, "≥ 3x"),
        _goal("sealing per request (seal, open, stream set-up)", sealing, SEALING_LIMIT_US, False,
              lambda v: f"{v / 1000:.3f} ms ({v:.0f} µs)", "< 1 ms"),
        *http_goals(targets),
        *prefix_reload_goals(targets),
        _goal("Wyoming: first handled-chunk after the core's first token (median)",
              _get(targets.get("edged-wyoming"), "scenarios", "wyoming-latency", "added_ms", "median"),
              WYOMING_ADDED_LIMIT_MS, False, ms, "≤ 5 ms"),
    ]
    structured = _get(targets.get("edged-structured"), "scenarios", "structured") or {}
    median = lambda key: (structured.get(key) or {}).get("median")  # noqa: E731
    goals += [
        _goal("decode with a JSON schema / unconstrained (socket)", median("decode_ratio"), 0.90, True, times,
              "≥ 0.90x"),
        _goal("schema compile on first use, 10-property object", median("compile_ms"), 50.0, False, ms, "≤ 50 ms"),
        _goal("TTFT added by a cached grammar", median("added_ttft_ms"), 5.0, False, ms, "≤ 5 ms"),
    ]
    return goals + extension_rows(results)


def prefix_reload_goals(targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 16: the first request after a reload, for a system prompt seen before, starts warm."""
    reload = _get(targets.get("edged-prefix"), "scenarios", "prefix-reload") or {}
    times = lambda v: f"{v:.2f}x"  # noqa: E731
    return [_goal(f"TTFT after {label} / warm TTFT, 300-token system prompt seen before",
                  _get(reload, kind, "ratio_to_warm"), 1.5, False, times, "≤ 1.5x")
            for kind, label in (("restart", "a restart"), ("profile_switch", "a profile switch"),
                                ("idle_unload", "an idle unload (includes reloading the model)"))]


def http_goals(targets: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 13: what the HTTP API may cost over the frame socket, on the same daemon."""
    http = _get(targets.get("edged-http"), "scenarios", "http-vs-socket") or {}
    startup = _get(targets.get("edged-http"), "scenarios", "http-startup") or {}
    return [
        _goal("TTFT added by HTTP over the frame socket (median)", _get(http, "added_ms", "median"), 2.0, False,
              lambda v: f"{v:.2f} ms", "≤ 2 ms"),
        _goal("streamed decode via HTTP / frame socket", http.get("decode_ratio_http_over_socket"), 0.98, True,
              lambda v: f"{v:.3f}x", "≥ 0.98x"),
        _goal("start → ready added by [http] enabled (median)", _get(startup, "added_ms", "startup_s"), 30.0, False,
              lambda v: f"{v:.1f} ms", "≤ 30 ms"),
    ]


def extension_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Measurements that have no target yet: shown so the table lists every planned benchmark."""
    engines = results["comparisons"].get("engines")
    if engines:
        ratio = engines["ratios"]["decode_tps_median"]
        onnx = {"goal": "ONNX engine / GGUF engine, decode", "measured": f"{ratio:.2f}x" if ratio else NOT_MEASURED,
                "target": "—", "status": NO_TARGET if ratio else NOT_MEASURED, "value": ratio, "limit": None}
    else:
        skipped = (results.get("skipped") or {}).get("edged-onnx")
        onnx = {"goal": "ONNX engine / GGUF engine, decode", "measured": NOT_MEASURED, "target": "—",
                "status": NOT_MEASURED, "value": None, "limit": None,
                "note": f"skipped: {skipped['reason']}" if skipped else None}
    update = results.get("model_update") or {}
    rate = update.get("bytes_per_s") if update.get("measured") else None
    by_size = update.get("by_chunk_size") or {}
    shown = ", ".join(f"{size}: {run['bytes_per_s'] / 1e6:.1f} MB/s" for size, run in by_size.items())
    met = MET if rate and rate >= TRANSFER_TARGET_BYTES_PER_S else NOT_MET
    transfer = {"goal": "model-update transfer throughput over local mosquitto", "measured": shown or NOT_MEASURED,
                "target": "≥ 20 MB/s", "status": met if rate else NOT_MEASURED, "value": rate,
                "limit": TRANSFER_TARGET_BYTES_PER_S, "note": update.get("reason") or update.get("error")}
    return [onnx, transfer]
