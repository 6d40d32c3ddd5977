"""The HTTP API section of docs/benchmarks.md: HTTP against the frame socket, and the start-up cost."""

from __future__ import annotations

from typing import Any

from benchlib.report_sections import _label, _scenario
from benchlib.tables import markdown_table, num, ratio


def http_api_section(results: dict[str, Any]) -> list[str]:
    found = _scenario(results, "http-vs-socket")
    if not found:
        return []
    name, data = found
    rows = []
    for arm in ("frame socket", "http"):
        summary = data["summary"][arm]
        rows.append([arm, num(summary["ttft_ms"]["median"]), num(summary["ttft_ms"]["p90"]),
                     num((summary["decode_tokens_per_s"] or {}).get("median")), str(summary["requests"])])
    added = data["added_ms"]
    lines = ["### HTTP API against the frame socket", "",
             f"The same daemon ({_label(results, name)}), asked in plaintext over its frame socket and with "
             "`POST /v1/chat/completions` (server-sent events) over `http.sock`, interleaved so that every request "
             "follows a different prompt; pairs are the same prompt in adjacent rounds. The HTTP client is the "
             "standard library's http.client, connected before the clock starts.", "",
             markdown_table(["transport", "TTFT median ms", "TTFT p90 ms", "decode tok/s median", "requests"], rows),
             "", f"HTTP adds **{added['median']:.2f} ms** to TTFT (median of {added['count']} pairs, range "
                 f"{added['minimum']:.2f} to {added['maximum']:.2f} ms; target ≤ 2 ms); decode HTTP / socket "
                 f"{ratio(data['decode_ratio_http_over_socket'])} (target ≥ 0.98x)."]
    startup = _scenario(results, "http-startup")
    if startup:
        added_start = startup[1]["added_ms"]
        first = startup[1].get("ready_to_http_answer_ms")
        lines += ["", f"Start-up with `[http] enabled` (its sockets bound and the HTTP code imported while "
                      f"the model loads, served from READY) against without: "
                      f"**{added_start['startup_s']:+.1f} ms** to the daemon's own ready "
                      f"time, {added_start['spawn_to_ready_s']:+.1f} ms from spawn to ready (medians of "
                      f"{len(startup[1]['runs']['on'])} alternating pairs of fresh daemons; target ≤ 30 ms)"
                      + (f"; `/health` answers {first:.1f} ms after READY." if first is not None else ".")]
    return lines
