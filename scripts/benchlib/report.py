"""The results as a table on stdout and as docs/benchmarks.md (below the hand-written method section)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchlib.goals import evaluate
from benchlib.machine import human_bytes
from benchlib.report_http import http_api_section
from benchlib.report_sections import (added_ttft_section, edged_reported_section, engines_section, goals_section,
                                      portable_native_section, power_profiles_section, seal_cost_section,
                                      sealed_socket_section, skipped_section, wyoming_section,
                                      prefix_reload_section)
from benchlib.settings import REPO
from benchlib.tables import markdown_table, text_table
from benchlib.tables import num as _num
from benchlib.tables import ratio as _ratio

MARKER = "<!-- scripts/bench: everything below this line is generated; edit the method section above it -->"
FALLBACK_HEADER = "# Benchmarks\n\nHow these numbers are made: see `scripts/bench --help` and `scripts/benchlib/`.\n"


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, target in results["targets"].items():
        if "chat" not in target.get("capabilities", ["chat"]):
            continue   # e.g. the power-profile sweep and the sealing micro-benchmark: sections of their own
        row = results["comparisons"]["rows"][name]
        rows.append([target["label"], _num(row["ready_s"], 2), _num(row["load_s"], 2),
                     _num(row["ttft_ms_median"]), _num(row["ttft_ms_p90"]),
                     _num(row["decode_tps_median"]), _num(row["decode_tps_p10"]),
                     _num(row["completion_tokens_median"], 0), human_bytes(row["peak_rss_bytes"]),
                     _num(row["idle_cpu_percent"], 2), _ratio(row["prefix_ratio"])])
    return rows


TARGET_HEADER = ["target", "start→ready s", "model load s", "TTFT median ms", "TTFT p90 ms",
                 "decode tok/s median", "decode tok/s p10", "tokens/request", "peak RSS",
                 "idle CPU % of a core", "prefix cache: fresh/reused TTFT"]


def ratio_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for item in results["comparisons"]["ratios"]:
        is_bytes = item["metric"] == "peak RSS"
        show = human_bytes if is_bytes else (lambda v: _num(v, 2))
        label = results["targets"].get(item["target"], {}).get("label", item["target"])
        rows.append([label, item["baseline"], item["metric"], show(item["edged"]), show(item["baseline_value"]),
                     _ratio(item["ratio"])])
    return rows


RATIO_HEADER = ["edged target", "baseline", "metric", "edged", "baseline value", "ratio"]


def llama_bench_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for test in (results.get("llama_bench") or {}).get("tests", {}).values():
        rates = test["tokens_per_s"] or {}
        rows.append([test["test"], _num(rates.get("median")), _num(rates.get("p10")), _num(rates.get("p90")),
                     f"{_num(test['avg_tokens_per_s'])} ± {_num(test['stddev_tokens_per_s'])}",
                     str(test["repetitions"])])
    return rows


LLAMA_BENCH_HEADER = ["test", "median tok/s", "p10", "p90", "mean ± sd", "repetitions"]


def print_summary(results: dict[str, Any]) -> None:
    print("\n== results ==")
    for warning in results["load"]["warnings"]:
        print(f"WARNING: machine not idle: {warning}")
    print(text_table(TARGET_HEADER, target_rows(results)))
    if results.get("llama_bench"):
        print("\nllama-bench:")
        print(text_table(LLAMA_BENCH_HEADER, llama_bench_rows(results)))
    if results["comparisons"]["ratios"]:
        print("\nedged relative to the baselines:")
        print(text_table(RATIO_HEADER, ratio_rows(results)))
    for name, added in results["comparisons"]["added_ttft"].items():
        label = results["targets"].get(name, {}).get("label", name)
        print(f"\nTTFT added by {label} over the in-process engine: median {added['median_added_ms']:.2f} ms "
              f"over {added['pairs']} {added['method']} request pairs")
    print("\ntargets:")
    print(text_table(["target", "measured", "goal", "status"],
                     [[g["goal"], g["measured"], g["target"], g["status"]] for g in evaluate(results)]))
    for failure in failures(results):
        print(f"FAILED: {failure}")


def failures(results: dict[str, Any]) -> list[str]:
    out = [f"llama.cpp baselines: {results['build_error']}"] if results.get("build_error") else []
    if isinstance(results.get("llama_bench"), dict) and results["llama_bench"].get("error"):
        out.append(f"llama-bench: {results['llama_bench']['error']}")
    if (results.get("model_update") or {}).get("error"):
        out.append(f"model-update transfer: {results['model_update']['error']}")
    for target in results["targets"].values():
        if target.get("error"):
            out.append(f"{target['label']}: {target['error']}")
        for name, scenario in target.get("scenarios", {}).items():
            if "error" in scenario:
                out.append(f"{target['label']} / {name}: {scenario['error']}")
    return out


def _repo_relative(text: str) -> str:
    """Paths inside the work tree shown relative to it: the report is read on other machines."""
    return text.replace(f"{REPO}/", "")


def write_markdown(results: dict[str, Any], out: Path, plots: list[Path]) -> None:
    """Replace everything below MARKER in `out`, keeping the hand-written part above it."""
    existing = out.read_text() if out.exists() else ""
    header = existing.split(MARKER)[0].rstrip() if MARKER in existing else (existing.rstrip() or FALLBACK_HEADER.rstrip())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + "\n\n" + MARKER + "\n\n" + _repo_relative(generated_markdown(results, out, plots)) + "\n")


def generated_markdown(results: dict[str, Any], out: Path, plots: list[Path]) -> str:
    settings, machine, load = results["settings"], results["machine"], results["load"]
    parts = ["## Results", "",
             f"Generated by `{results['command']}` on {results['date']}"
             + (" in **quick mode** (fewer repetitions, 5 s idle window: for checking the tool, not for citing)."
                if settings["quick"] else ".")]
    if load["warnings"]:
        parts += ["", "> **Warning: the machine was not idle during this run; treat every number as noisy.**"]
        parts += [f"> - {warning}" for warning in load["warnings"]]
    parts += ["", f"Load: 1-min load average {load['start_loadavg']:.2f} at the start (max {load['max_loadavg']:.2f}); "
              f"other processes used {load['mean_other_cores']:.2f} cores on average, "
              f"{load['peak_other_cores']:.2f} at most (1 s samples, {load['duration_s']:.0f} s run)."]
    parts += ["", *goals_section(results)]
    versions = results["versions"]
    facts = [["CPU", f"{machine['cpu_model']} ({machine['cores']} cores, {machine['arch']})"],
             ["memory", human_bytes(machine["memory_bytes"])], ["kernel", machine["kernel"]],
             *[[name, value] for name, value in versions.items()]]
    build = results.get("llama_cpp_build")
    if build:
        facts.append(["llama.cpp build", f"{build['build_seconds']:.0f} s for llama-server + llama-bench "
                      f"({'cached' if build['reused'] else 'built in this run'}), "
                      f"options {' '.join(build['options'])}"])
    engine = results["engine"]
    facts += [["threads", str(engine["threads"])], ["generated tokens per request", str(settings["tokens"])],
              ["engine settings (all targets)", f"context {engine['context']}, batch {engine['batch']}, "
               f"KV cache {engine['kv_cache_type']}, mmap {engine['mmap']}"],
              ["repetitions", f"{settings['repetitions']} per prompt, {results['prompt_count']} prompts, "
               "after 1 warm-up request"],
              ["idle window", f"{settings['idle_window_s']:.0f} s"], ["model", results["model_path"]]]
    if "profile_requests" in settings:   # raw results of older runs lack these
        facts += [["power profiles", f"{settings['profile_requests']} requests of {settings['profile_tokens']} tokens "
                   "per profile, after 1 warm-up request"],
                  ["sealing micro-benchmark", f"{settings['seal_repeat']} repeats of {settings['seal_number']} calls"]]
    parts += ["", "### Machine, versions and settings", "", markdown_table(["", ""], facts)]
    parts += ["", "### Per target", "", markdown_table(TARGET_HEADER, target_rows(results)), "",
              "TTFT: request sent to first content chunk, client side (raw llama-cpp-python and the in-process "
              "engine: call to first chunk, inside the process; MQTT: from before the request is sealed to the first "
              "chunk opened from the broker). Decode: tokens after the first / time from the "
              "first to the last chunk. p10 of a rate is its slow tail."]
    if (results.get("llama_bench") or {}).get("tests"):
        parts += ["", "### llama-bench", "", markdown_table(LLAMA_BENCH_HEADER, llama_bench_rows(results)), "",
                  f"`{results['llama_bench']['command']}`"]
    if results["comparisons"]["ratios"]:
        parts += ["", "### edged relative to the baselines", "", markdown_table(RATIO_HEADER, ratio_rows(results)),
                  "", "A ratio above 1 means edged's number is larger: better for tok/s, worse for the others."]
    for section in (added_ttft_section(results), edged_reported_section(results), _prefix_section(results),
                    prefix_reload_section(results),
                    sealed_socket_section(results), seal_cost_section(results), power_profiles_section(results),
                    http_api_section(results), wyoming_section(results), engines_section(results),
                    portable_native_section(results), skipped_section(results)):
        if section:
            parts += ["", *section]
    if plots:
        parts += ["", "### Plots", ""]
        parts += [f"![{p.stem}]({os.path.relpath(p, out.parent)})" for p in plots]
    parts += ["", "### How each target was run", ""]
    for target in results["targets"].values():
        details = "; ".join(f"{k}: `{v}`" if k == "command" else f"{k}: {v}"
                            for k, v in target.get("describe", {}).items() if k != "log")
        parts.append(f"- **{target['label']}**: {details or 'n/a'}")
    problems = failures(results)
    if problems:
        parts += ["", "### Failures", ""] + [f"- {p}" for p in problems]
    return "\n".join(parts)


def _prefix_section(results: dict[str, Any]) -> list[str]:
    rows = []
    for target in results["targets"].values():
        prefix = target.get("scenarios", {}).get("prefix-cache")
        if not prefix or "error" in prefix:
            continue
        reused, fresh = prefix["reused"]["summary"]["ttft_ms"], prefix["fresh"]["summary"]["ttft_ms"]
        rows.append([target["label"], _num(reused["median"]), _num(fresh["median"]),
                     _ratio(prefix["ttft_ratio_fresh_over_reused"]), str(prefix["reused"]["summary"]["requests"])])
    if not rows:
        return []
    return ["### Prefix cache", "",
            "TTFT with a reused ~300-token system prompt (same system prompt, a different question each time, after "
            "one priming request) against a fresh system prompt every time.", "",
            markdown_table(["target", "reused TTFT median ms", "fresh TTFT median ms", "fresh/reused",
                            "requests per arm"], rows)]
