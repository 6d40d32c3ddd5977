"""The results as a table on stdout and as docs/benchmarks.md (below the hand-written method section)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchlib.machine import human_bytes
from benchlib.settings import REPO

MARKER = "<!-- scripts/bench: everything below this line is generated; edit the method section above it -->"
FALLBACK_HEADER = "# Benchmarks\n\nHow these numbers are made: see `scripts/bench --help` and `scripts/benchlib/`.\n"


def _num(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def target_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, target in results["targets"].items():
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
        rows.append([f"edged / {item['baseline']}", item["metric"], show(item["edged"]), show(item["baseline_value"]),
                     _ratio(item["ratio"])])
    return rows


RATIO_HEADER = ["comparison", "metric", "edged", "baseline", "ratio"]


def llama_bench_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for test in (results.get("llama_bench") or {}).get("tests", {}).values():
        rates = test["tokens_per_s"] or {}
        rows.append([test["test"], _num(rates.get("median")), _num(rates.get("p10")), _num(rates.get("p90")),
                     f"{_num(test['avg_tokens_per_s'])} ± {_num(test['stddev_tokens_per_s'])}",
                     str(test["repetitions"])])
    return rows


LLAMA_BENCH_HEADER = ["test", "median tok/s", "p10", "p90", "mean ± sd", "repetitions"]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


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
    added = results["comparisons"]["added_ttft"]
    if added:
        print(f"\nTTFT added by edged over the in-process engine: median {added['median_added_ms']:.2f} ms "
              f"over {added['pairs']} {added['method']} request pairs")
    for failure in failures(results):
        print(f"FAILED: {failure}")


def failures(results: dict[str, Any]) -> list[str]:
    out = [f"llama.cpp baselines: {results['build_error']}"] if results.get("build_error") else []
    if isinstance(results.get("llama_bench"), dict) and results["llama_bench"].get("error"):
        out.append(f"llama-bench: {results['llama_bench']['error']}")
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
    parts += ["", "### Machine, versions and settings", "", markdown_table(["", ""], facts)]
    parts += ["", "### Per target", "", markdown_table(TARGET_HEADER, target_rows(results)), "",
              "TTFT: request sent to first content chunk, client side (raw llama-cpp-python and the in-process "
              "engine: call to first chunk, inside the process). Decode: tokens after the first / time from the "
              "first to the last chunk. p10 of a rate is its slow tail."]
    if (results.get("llama_bench") or {}).get("tests"):
        parts += ["", "### llama-bench", "", markdown_table(LLAMA_BENCH_HEADER, llama_bench_rows(results)), "",
                  f"`{results['llama_bench']['command']}`"]
    if results["comparisons"]["ratios"]:
        parts += ["", "### edged relative to the baselines", "", markdown_table(RATIO_HEADER, ratio_rows(results)),
                  "", "A ratio above 1 means edged's number is larger: better for tok/s, worse for the others."]
    for section in (_added_ttft_section(results), _edged_reported_section(results), _prefix_section(results)):
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


def _added_ttft_section(results: dict[str, Any]) -> list[str]:
    added = results["comparisons"]["added_ttft"]
    if not added:
        return ["### Time to first token added by edged", "", "Not measured (needs the `edged` target with the "
                "`added-ttft` scenario, or the `edged` and `edged-engine` targets with `chat`)."]
    reported = added["edged_reported_ttft_ms_median"]
    return ["### Time to first token added by edged", "",
            f"Median **{added['median_added_ms']:.2f} ms** (range {added['min_added_ms']:.2f} to "
            f"{added['max_added_ms']:.2f} ms over {added['pairs']} paired requests): edged's client-side TTFT "
            f"over the socket (median {added['edged_client_ttft_ms_median']:.1f} ms) minus the TTFT of the same "
            f"request on edged's engine driven in the benchmark process "
            f"(median {added['in_process_ttft_ms_median']:.1f} ms), "
            + (f"alternating daemon and in-process request by request, {added.get('max_tokens')} generated tokens each."
               if added["method"] == "alternating" else
               "from the chat runs of the two targets (same requests in the same order, minutes apart).")
            + (f" The daemon's own `edged.ttft_ms` median was {reported:.1f} ms." if reported is not None else "")]


def _edged_reported_section(results: dict[str, Any]) -> list[str]:
    stats = results["comparisons"]["edged_reported"]
    if not stats:
        return []
    rows = [["queue wait ms", _num(stats["queue_ms"], 2)], ["TTFT ms (daemon side)", _num(stats["ttft_ms"])],
            ["total ms", _num(stats["total_ms"])], ["decode tok/s", _num(stats["decode_tokens_per_s"])],
            ["prompt tokens reused from the cache", _num(stats["prompt_cached_tokens"], 0)],
            ["energy J per request", _num(stats["energy_j"], 3)],
            ["energy J per token", _num(stats["energy_j_per_token"], 4)],
            ["energy source", ", ".join(stats["energy_sources"])], ["profile", ", ".join(stats["profiles"])],
            ["daemon start-up s (its `ready` log line)", _num(stats["daemon_startup_s"], 3)]]
    return ["### edged's own statistics", "",
            "Medians over the chat requests of the final event's `edged` object (the daemon's view, no transport).",
            "", markdown_table(["statistic", "median"], rows)]


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
