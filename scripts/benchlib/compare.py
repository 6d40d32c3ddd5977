"""Numbers derived across targets: the per-target headline row, edged's ratios, and edged's added TTFT.

"edged targets" are edged's daemon behind each transport or engine (socket, MQTT sealed, ONNX); each
gets the same ratios against the baselines and, where the in-process comparison ran, its added TTFT.
"""

from __future__ import annotations

import statistics
from typing import Any

EDGED = "edged"
EDGED_MQTT = "edged-mqtt"
EDGED_ONNX = "edged-onnx"
EDGED_TARGETS = (EDGED, EDGED_MQTT, EDGED_ONNX)
ENGINE_IN_PROCESS = "edged-engine"
LLAMA_SERVER = "llama-server"
RAW = "llama-cpp-python"
LLAMA_BENCH = "llama-bench"


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def headline(target: dict[str, Any]) -> dict[str, Any]:
    """One target's row: startup, TTFT, decode rate, memory and idle CPU (None where not measured)."""
    chat = _get(target, "scenarios", "chat", "summary")
    return {
        "ready_s": _get(target, "startup", "ready_s"),
        "load_s": _get(target, "startup", "details", "load_s"),
        "ttft_ms_median": _get(chat, "ttft_ms", "median"),
        "ttft_ms_p90": _get(chat, "ttft_ms", "p90"),
        "decode_tps_median": _get(chat, "decode_tokens_per_s", "median"),
        "decode_tps_p10": _get(chat, "decode_tokens_per_s", "p10"),
        "completion_tokens_median": _get(chat, "completion_tokens", "median"),
        "requests": _get(chat, "requests"),
        "peak_rss_bytes": target.get("peak_rss_bytes"),
        "idle_cpu_percent": _get(target, "scenarios", "idle-cpu", "cpu_percent_of_one_core"),
        "prefix_ratio": _get(target, "scenarios", "prefix-cache", "ttft_ratio_fresh_over_reused"),
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def ratios(rows: dict[str, dict[str, Any]], llama_bench: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Each edged target / each baseline, per metric. >1: edged's number is larger (good for tok/s only)."""
    out: list[dict[str, Any]] = []
    metrics = (("decode tok/s (median)", "decode_tps_median"), ("TTFT ms (median)", "ttft_ms_median"),
               ("start to ready s", "ready_s"), ("peak RSS", "peak_rss_bytes"), ("idle CPU %", "idle_cpu_percent"))
    bench_decode = _get(llama_bench, "tests", "decode", "tokens_per_s", "median")
    for name in EDGED_TARGETS:
        edged = rows.get(name)
        if edged is None:
            continue
        for baseline in (LLAMA_SERVER, RAW):
            if baseline not in rows:
                continue
            for label, key in metrics:
                value = _ratio(edged[key], rows[baseline][key])
                if value is not None:
                    out.append({"target": name, "baseline": baseline, "metric": label, "edged": edged[key],
                                "baseline_value": rows[baseline][key], "ratio": value})
        value = _ratio(edged["decode_tps_median"], bench_decode)
        if value is not None:
            out.append({"target": name, "baseline": LLAMA_BENCH, "metric": "decode tok/s (median)",
                        "edged": edged["decode_tps_median"], "baseline_value": bench_decode, "ratio": value})
    return out


def find_ratio(comparisons: dict[str, Any], target: str, baseline: str, metric: str) -> dict[str, Any] | None:
    return next((r for r in comparisons["ratios"]
                 if (r["target"], r["baseline"], r["metric"]) == (target, baseline, metric)), None)


def added_ttft(targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per edged target: median of its client-side TTFT minus the in-process engine's, request by request."""
    out = {}
    for name in EDGED_TARGETS:
        found = _alternating_added_ttft(targets.get(name)) or (_sequential_added_ttft(targets) if name == EDGED
                                                                 else None)
        if found:
            out[name] = found
    return out


def _alternating_added_ttft(target: dict[str, Any] | None) -> dict[str, Any] | None:
    """From the added-ttft scenario: the daemon and the in-process engine alternating request by request."""
    alternating = _get(target, "scenarios", "added-ttft", "pairs")
    if not alternating:
        return None
    differences = [(p["daemon_ttft_s"] - p["in_process_ttft_s"]) * 1000 for p in alternating]
    reported = [p["daemon_reported_ttft_ms"] for p in alternating if p["daemon_reported_ttft_ms"] is not None]
    return {"method": "alternating", "max_tokens": _get(target, "scenarios", "added-ttft", "max_tokens"),
            "pairs": len(alternating), "median_added_ms": statistics.median(differences),
            "min_added_ms": min(differences), "max_added_ms": max(differences),
            "edged_client_ttft_ms_median": statistics.median(p["daemon_ttft_s"] * 1000 for p in alternating),
            "in_process_ttft_ms_median": statistics.median(p["in_process_ttft_s"] * 1000 for p in alternating),
            "edged_reported_ttft_ms_median": statistics.median(reported) if reported else None}


def _sequential_added_ttft(targets: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Fallback: the chat scenarios of `edged` and `edged-engine` (same requests, same order, minutes apart)."""
    daemon = _get(targets.get(EDGED), "scenarios", "chat", "samples")
    in_process = _get(targets.get(ENGINE_IN_PROCESS), "scenarios", "chat", "samples")
    if not daemon or not in_process:
        return None
    pairs = [(a, b) for a, b in zip(daemon, in_process) if a["prompt_id"] == b["prompt_id"]]
    if not pairs:
        return None
    differences = [(a["ttft_s"] - b["ttft_s"]) * 1000 for a, b in pairs]
    # The daemon's own view of TTFT (queue + engine) shows how much of the difference is the transport.
    daemon_side = [a["server"].get("edged", {}).get("ttft_ms") for a, _ in pairs]
    return {
        "method": "sequential",
        "pairs": len(pairs),
        "median_added_ms": statistics.median(differences),
        "min_added_ms": min(differences),
        "max_added_ms": max(differences),
        "edged_client_ttft_ms_median": statistics.median(a["ttft_s"] * 1000 for a, _ in pairs),
        "in_process_ttft_ms_median": statistics.median(b["ttft_s"] * 1000 for _, b in pairs),
        "edged_reported_ttft_ms_median": statistics.median(v for v in daemon_side if v is not None)
        if any(v is not None for v in daemon_side) else None,
    }


def edged_reported(targets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per edged target: medians of the daemon's own per-request stats (final event's `edged` object) in chat."""
    return {name: found for name in EDGED_TARGETS if (found := _reported(targets.get(name)))}


def _reported(target: dict[str, Any] | None) -> dict[str, Any] | None:
    samples = _get(target, "scenarios", "chat", "samples")
    if not samples:
        return None
    stats = [s["server"].get("edged", {}) for s in samples]

    def median_of(key: str) -> float | None:
        values = [v[key] for v in stats if isinstance(v.get(key), (int, float))]
        return statistics.median(values) if values else None

    per_token = [v["energy_j"] / s["completion_tokens"] for v, s in zip(stats, samples)
                 if isinstance(v.get("energy_j"), (int, float)) and s["completion_tokens"]]
    return {"queue_ms": median_of("queue_ms"), "ttft_ms": median_of("ttft_ms"), "total_ms": median_of("total_ms"),
            "decode_tokens_per_s": median_of("decode_tokens_per_s"), "energy_j": median_of("energy_j"),
            "energy_j_per_token": statistics.median(per_token) if per_token else None,
            "prompt_cached_tokens": median_of("prompt_cached_tokens"),
            "energy_sources": sorted({str(v.get("energy_source")) for v in stats}),
            "profiles": sorted({str(v.get("profile")) for v in stats}),
            "daemon_startup_s": _get(target, "startup", "details", "daemon_startup_s")}


def engines(rows: dict[str, dict[str, Any]], reported: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """edged's ONNX engine against its llama.cpp engine (GGUF), both as daemons over the socket."""
    if EDGED_ONNX not in rows or EDGED not in rows:
        return None
    out: dict[str, Any] = {}
    for name, engine in ((EDGED, "gguf"), (EDGED_ONNX, "onnx")):
        row, stats = rows[name], reported.get(name) or {}
        out[engine] = {"decode_tps_median": row["decode_tps_median"], "ttft_ms_median": row["ttft_ms_median"],
                       "peak_rss_bytes": row["peak_rss_bytes"], "energy_j_per_token": stats.get("energy_j_per_token"),
                       "energy_sources": stats.get("energy_sources", [])}
    out["ratios"] = {key: _ratio(out["onnx"][key], out["gguf"][key])
                     for key in ("decode_tps_median", "ttft_ms_median", "peak_rss_bytes", "energy_j_per_token")}
    return out


def derive(results: dict[str, Any]) -> dict[str, Any]:
    rows = {name: headline(target) for name, target in results["targets"].items()}
    reported = edged_reported(results["targets"])
    return {"rows": rows, "ratios": ratios(rows, results.get("llama_bench")),
            "added_ttft": added_ttft(results["targets"]), "edged_reported": reported,
            "engines": engines(rows, reported)}
