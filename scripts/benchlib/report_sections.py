"""The edged-specific sections of docs/benchmarks.md: targets, added TTFT, sealing, power profiles, engines.

Each function returns the section's markdown lines, or [] when its data was not measured in this run.
"""

from __future__ import annotations

from typing import Any

from benchlib.goals import NOT_MET, evaluate
from benchlib.machine import human_bytes
from benchlib.tables import markdown_table, num, ratio


def _label(results: dict[str, Any], name: str) -> str:
    return results["targets"].get(name, {}).get("label", name)


def _scenario(results: dict[str, Any], name: str) -> tuple[str, dict[str, Any]] | None:
    """(target name, result) of the first target on which scenario `name` succeeded."""
    for target_name, target in results["targets"].items():
        found = target.get("scenarios", {}).get(name)
        if found and "error" not in found:
            return target_name, found
    return None


def goals_section(results: dict[str, Any]) -> list[str]:
    goals = evaluate(results)
    rows = [[g["goal"], g["measured"], g["target"], f"**{g['status']}**" if g["status"] == NOT_MET else g["status"]]
            for g in goals]
    notes = [f"- {g['goal']}: {g['note']}" for g in goals if g.get("note")]
    caveat = []
    if results["settings"]["quick"] or results["load"]["warnings"]:
        caveat = ["", "Quick mode or a busy machine: a miss here may be noise; the full run on an idle machine "
                      "decides."]
    return ["### Targets", "", markdown_table(["target", "measured", "goal", "status"], rows), *caveat,
            *([""] + notes if notes else [])]


def added_ttft_section(results: dict[str, Any]) -> list[str]:
    added = results["comparisons"]["added_ttft"]
    title = "### Time to first token added by edged"
    if not added:
        return [title, "", "Not measured (needs the `edged` or `edged-mqtt` target with the `added-ttft` scenario)."]
    rows = []
    for name, item in added.items():
        reported = item["edged_reported_ttft_ms_median"]
        rows.append([_label(results, name), f"**{item['median_added_ms']:.2f}**",
                     f"{item['min_added_ms']:.2f} to {item['max_added_ms']:.2f}", str(item["pairs"]),
                     num(item["edged_client_ttft_ms_median"]), num(item["in_process_ttft_ms_median"]),
                     num(reported), item["method"]])
    tokens = next((i.get("max_tokens") for i in added.values() if i.get("max_tokens")), None)
    return [title, "",
            "edged's client-side TTFT minus the TTFT of the same request on edged's engine driven in the benchmark "
            "process, per request pair. *alternating*: daemon and in-process engine request by request"
            + (f", {tokens} generated tokens each" if tokens else "") + "; *sequential*: from the chat runs of the "
            "two targets (same requests in the same order, minutes apart). Over MQTT the client-side time includes "
            "sealing, the broker both ways and opening the chunks.", "",
            markdown_table(["target", "added ms (median)", "range ms", "pairs", "client TTFT ms", "in-process TTFT ms",
                            "daemon's own TTFT ms", "method"], rows)]


def edged_reported_section(results: dict[str, Any]) -> list[str]:
    reported = results["comparisons"]["edged_reported"]
    if not reported:
        return []
    names = list(reported)
    lines = [("queue wait ms", "queue_ms", 2), ("TTFT ms (daemon side)", "ttft_ms", 1), ("total ms", "total_ms", 1),
             ("decode tok/s", "decode_tokens_per_s", 1),
             ("prompt tokens reused from the cache", "prompt_cached_tokens", 0),
             ("energy J per request", "energy_j", 3), ("energy J per token", "energy_j_per_token", 4)]
    rows = [[label, *(num(reported[n][key], digits) for n in names)] for label, key, digits in lines]
    rows += [["energy source", *(", ".join(reported[n]["energy_sources"]) for n in names)],
             ["profile", *(", ".join(reported[n]["profiles"]) for n in names)],
             ["daemon start-up s (its `ready` log line)", *(num(reported[n]["daemon_startup_s"], 3) for n in names)]]
    return ["### edged's own statistics", "",
            "Medians over the chat requests of the final event's `edged` object (the daemon's view, no transport).",
            "", markdown_table(["statistic", *(_label(results, n) for n in names)], rows)]


def sealed_socket_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "sealed-socket")
    if not found:
        return []
    name, data = found
    rows = []
    for arm in ("plaintext", "sealed"):
        summary = data["summary"][arm]
        rows.append([arm, num(summary["ttft_ms"]["median"]), num(summary["ttft_ms"]["p90"]),
                     num((summary["decode_tokens_per_s"] or {}).get("median")), str(summary["requests"])])
    added = data["added_ms"]
    return ["### Sealed against plaintext requests over the socket", "",
            f"The same daemon ({_label(results, name)}), asked over its Unix socket in plaintext and with sealed "
            "(e2e-v1) requests, interleaved so that every request follows a different prompt; pairs are the same "
            "prompt in adjacent rounds. Sealed TTFT includes sealing on the client and opening on the device.", "",
            markdown_table(["request", "TTFT median ms", "TTFT p90 ms", "decode tok/s median", "requests"], rows), "",
            f"Sealed adds **{added['median']:.2f} ms** to TTFT (median of {added['count']} per-prompt pairs, range "
            f"{added['minimum']:.2f} to {added['maximum']:.2f} ms); decode sealed / plaintext "
            f"{ratio(data['decode_ratio_sealed_over_plaintext'])}."]


def wyoming_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "wyoming-latency")
    if not found:
        return []
    name, data = found
    rows = [[label, num(data[key]["median"], 2), num(data[key]["p90"], 2), num(data[key]["maximum"], 2)]
            for label, key in (("client: transcript written → first handled-chunk", "client_first_chunk_ms"),
                               ("core: its own TTFT (request log line)", "core_ttft_ms"),
                               ("added by the Wyoming path", "added_ms"))]
    return ["### Wyoming: first handled-chunk after the core's first token", "",
            f"{_label(results, name)}: each chat prompt as a transcript, asked with the wyoming package's own "
            "client over a Unix socket (streaming on, no system prompt). Added = the client's time to the first "
            "handled-chunk minus the core's TTFT for the same request; it includes reading the transcript, so it "
            "is an upper bound.", "",
            markdown_table(["ms", "median", "p90", "max"], rows)]


def seal_cost_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "seal-cost")
    if not found:
        return []
    _, data = found
    first = next(iter(data["operations"].values()))
    rows = [[operation, num(value["median_us"]), num(value["min_us"])]
            for operation, value in data["operations"].items()]
    return ["### Cost of sealing", "",
            f"e2e-v1 in the benchmark process, timeit-style ({first['repeat']} repeats of {first['number']} calls; "
            "per call). The device side is a real `SealedGateway` (prekey ring, allow-list, replay cache) provisioned "
            "with `edged keys`.", "",
            markdown_table(["operation", "median µs", "min µs"], rows), "",
            f"Per request (seal, open, both stream set-ups): **{data['per_request_us']:.0f} µs**; per streamed chunk "
            f"(seal + open): {data['per_chunk_us']:.1f} µs; a {data['answer_tokens']}-token answer in all: "
            f"{data['per_answer_us'] / 1000:.2f} ms. Sizes: request body {data['request_body_bytes']} B → sealed "
            f"{data['sealed_request_bytes']} B; token chunk {data['chunk_plaintext_bytes']} B → "
            f"{data['sealed_chunk_bytes']} B."]


def power_profiles_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "power-profiles")
    if not found:
        return []
    _, data = found
    base = data["profiles"].get("performance") or {}
    base_rate = (base.get("summary", {}).get("decode_tokens_per_s") or {}).get("median")
    rows = []
    for profile, item in data["profiles"].items():
        rate = (item["summary"]["decode_tokens_per_s"] or {}).get("median")
        tag = " (estimate)" if item["estimate"] else ""
        rows.append([profile, str(item.get("threads")), num(rate),
                     ratio(rate / base_rate if rate and base_rate else None),
                     num(item["end_to_end_tokens_per_s_median"]), num(item["power_w_median"], 2) + tag,
                     num(item["energy_j_per_token_median"], 4) + tag,
                     ratio(item["energy_j_per_token_median"] / base["energy_j_per_token_median"]
                           if item["energy_j_per_token_median"] and base.get("energy_j_per_token_median") else None),
                     ", ".join(item["energy_sources"])])
    return ["### Power profiles", "",
            f"One daemon, each profile pinned in turn with the `profile` control op, a warm-up request for the model "
            f"reload, then {data['requests_per_profile']} requests of {data['tokens']} tokens with priority "
            f"`{data['priority']}` (the only one `parked` admits). Pacing is part of the profile. Power = energy_j / "
            "total time of the request, J/token = energy_j / completion tokens (medians; the final event's `edged` "
            "object). *(estimate)*: no power sensor, the joules are estimated from CPU time and a board model.", "",
            markdown_table(["profile", "threads", "decode tok/s", "vs performance", "end-to-end tok/s", "avg power W",
                            "J/token", "J/token vs performance", "energy source"], rows)]


def engines_section(results: dict[str, Any]) -> list[str]:
    engines = results["comparisons"].get("engines")
    if not engines:
        skipped = (results.get("skipped") or {}).get("edged-onnx")
        return ["### ONNX engine against the GGUF engine", "",
                f"Not measured{': ' + skipped['reason'] if skipped else ' (select the `edged-onnx` target)'}."]
    gguf, onnx, ratios = engines["gguf"], engines["onnx"], engines["ratios"]
    rows = [["decode tok/s (median)", num(gguf["decode_tps_median"]), num(onnx["decode_tps_median"]),
             ratio(ratios["decode_tps_median"])],
            ["TTFT ms (median)", num(gguf["ttft_ms_median"]), num(onnx["ttft_ms_median"]),
             ratio(ratios["ttft_ms_median"])],
            ["peak RSS", human_bytes(gguf["peak_rss_bytes"]), human_bytes(onnx["peak_rss_bytes"]),
             ratio(ratios["peak_rss_bytes"])],
            ["J/token (median)", num(gguf["energy_j_per_token"], 4), num(onnx["energy_j_per_token"], 4),
             ratio(ratios["energy_j_per_token"])],
            ["energy source", ", ".join(gguf["energy_sources"]), ", ".join(onnx["energy_sources"]), ""]]
    return ["### ONNX engine against the GGUF engine", "",
            "The same daemon over the socket, same prompts and settings: `--model` the demo GGUF (llama.cpp) against "
            "the directory `edged convert onnx` made from it (onnxruntime).", "",
            markdown_table(["metric", "GGUF (llama.cpp)", "ONNX", "ONNX / GGUF"], rows)]


def skipped_section(results: dict[str, Any]) -> list[str]:
    skipped = results.get("skipped") or {}
    if not skipped:
        return []
    return ["### Skipped targets", "", *(f"- **{item['label']}**: {item['reason']}" for item in skipped.values())]


def portable_native_section(results: dict[str, Any]) -> list[str]:
    """Portable engine build (the default) against a -march=native one, same machine, alternating runs."""
    data = results.get("portable_vs_native")
    if not data:
        return []
    if "error" in data:
        return ["### Portable vs native engine build", "", f"Not measured: {data['error']}"]
    rows = []
    for key, label in (("edged_decode_tokens_per_s", "edged engine decode"),
                       ("llama_bench_tg_tokens_per_s", "llama-bench tg")):
        ratio = data["ratios"][key]
        rows.append([label, num(data["portable"][f"{key}_median"]), num(data["native"][f"{key}_median"]),
                     f"{ratio:.3f}" if ratio else "n/a",
                     "met" if ratio and ratio >= data["target_ratio"] else "MISSED"])
    return ["### Portable vs native engine build", "",
            f"Portable = scripts/build-engine's default (run-time CPU dispatch; variant in use: "
            f"`{data['portable'].get('variant', '?')}`); native = `EDGED_NATIVE=1` (-march=native, variant "
            f"`{data['native'].get('variant', '?')}`). Same llama.cpp, same model and threads, alternating "
            f"processes; target portable/native ≥ {data['target_ratio']}.", "",
            markdown_table(["measure", "portable tok/s (median)", "native tok/s (median)", "portable/native",
                            "target"], rows), "",
            f"Portable options: `{' '.join(data['portable']['options'])}`; native options: "
            f"`{' '.join(data['native']['options'])}`."]


def prefix_reload_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "prefix-reload")
    if not found:
        return []
    name, data = found
    warm = data["warm"]
    rows = [["warm (same daemon, model loaded)", num(warm["ttft_ms_median"]), "—", num(warm["queue_ms_median"]),
             str(warm["count"]), ", ".join(str(c) for c in warm["cached_prompt_tokens"][:4]) + " …"]]
    for kind, label in (("restart", "after a restart"), ("profile_switch", "after a profile switch (both ways)"),
                        ("idle_unload", "after an idle unload (model loaded by the request)")):
        entry = data[kind]
        rows.append([label, num(entry["ttft_ms_median"]), ratio(entry["ratio_to_warm"]), num(entry["queue_ms_median"]),
                     str(entry["count"]), ", ".join(str(c) for c in entry["cached_prompt_tokens"])])
    return ["### Prefix state across reloads", "",
            f"{_label(results, name)}: a ~{data['system_prompt_chars']}-character (~300-token) system prompt is "
            "decoded once, then each round restarts the daemon, switches to the "
            f"`{data['switch_profile']}` profile and back (other context and batch: a reload each way), and lets the "
            f"`performance` profile unload the model after {data['idle_unload_after_s']:.0f} idle seconds; the first "
            "request after each is timed. *cached* is the daemon's `prompt_cached_tokens` (the prefix restored from "
            "the state directory). After an idle unload the request itself waits for the model to load (its queue "
            "wait), which no stored state can save.", "",
            markdown_table(["first request", "TTFT median ms", "/ warm", "queue wait ms (median)", "requests",
                            "cached prompt tokens"], rows)]
