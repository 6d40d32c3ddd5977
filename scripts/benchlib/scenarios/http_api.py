"""The HTTP API against the frame socket on one daemon, and what HTTP adds to start-up.

`http-vs-socket` interleaves the two transports exactly as `sealed-socket` interleaves sealed and
plaintext: the prompts go round in their fixed order while the transport alternates request by
request, and the first transport of a round flips every round, so over two rounds each prompt is
asked once per transport, after a different prompt each time (the same prompt-cache reuse for
both). Targets: TTFT added by HTTP <= 2 ms (median of the pairs), decode rate >= 0.98 x the socket's.

`http-startup` starts fresh daemons with `[http] enabled` true and false alternately and compares
their own start-to-ready time (the `startup_s` of the "ready" log line) and the wall time from spawn
to that line. Target: HTTP on adds at most 30 ms (median of the pairs). The HTTP sockets are bound
before READY and served right after it, so it also reports how long after READY /health answers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.prompts import CHAT_PROMPTS, chat_messages
from benchlib.samples import RequestSample, Summary, summarize_requests
from benchlib.scenarios.base import Log, Scenario, describe_sample
from benchlib.settings import BenchSettings, REPO, VENV_PYTHON
from benchlib.targets.base import Target
from benchlib.targets.edged_http import HTTP_API, EdgedHttpTarget, UnixHTTPConnection

SOCKET, HTTP = "frame socket", "http"


class HttpVsSocketScenario(Scenario):
    name = "http-vs-socket"
    requires = frozenset({HTTP_API})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        assert isinstance(target, EdgedHttpTarget)
        ask = {SOCKET: target.socket_chat, HTTP: target.http_chat}
        for arm in (SOCKET, HTTP):
            warmup = ask[arm](chat_messages("warm-up"), settings.tokens, "warm-up")
            log(f"    warm-up  {arm:<12} {describe_sample(warmup)}")
        samples: dict[str, list[RequestSample]] = {SOCKET: [], HTTP: []}
        by_round: list[dict[str, tuple[str, RequestSample]]] = []
        for round_index in range(2 * settings.repetitions):
            this_round: dict[str, tuple[str, RequestSample]] = {}
            for index, prompt_id in enumerate(CHAT_PROMPTS):
                arm = HTTP if (index + round_index) % 2 else SOCKET
                sample = ask[arm](chat_messages(prompt_id), settings.tokens, prompt_id)
                samples[arm].append(sample)
                this_round[prompt_id] = (arm, sample)
                log(f"    #{round_index + 1:<7} {arm:<12} {prompt_id:<18} {describe_sample(sample)}")
            by_round.append(this_round)
        pairs = []
        for first, second in zip(by_round[0::2], by_round[1::2]):
            for prompt_id in CHAT_PROMPTS:
                arms = dict([first[prompt_id], second[prompt_id]])
                pairs.append({"prompt_id": prompt_id, "socket_ttft_s": arms[SOCKET].ttft_s,
                              "http_ttft_s": arms[HTTP].ttft_s})
        added = Summary.of([(p["http_ttft_s"] - p["socket_ttft_s"]) * 1000 for p in pairs])
        assert added is not None
        summaries = {arm: summarize_requests(samples[arm]) for arm in (SOCKET, HTTP)}
        rates = {arm: (summaries[arm]["decode_tokens_per_s"] or {}).get("median") for arm in (SOCKET, HTTP)}
        ratio = rates[HTTP] / rates[SOCKET] if rates[HTTP] and rates[SOCKET] else None
        log(f"    HTTP adds {added.median:.2f} ms TTFT over the frame socket (median of {added.count} pairs; "
            f"target <= 2 ms); decode {rates[HTTP] or 0:.1f} vs {rates[SOCKET] or 0:.1f} tok/s "
            f"(ratio {ratio or 0:.3f}; target >= 0.98)")
        return {"samples": {arm: [s.to_json() for s in samples[arm]] for arm in (SOCKET, HTTP)},
                "summary": summaries, "pairs": pairs, "added_ms": added.__dict__,
                "decode_ratio_http_over_socket": ratio,
                "targets": {"added_ttft_ms_max": 2.0, "decode_ratio_min": 0.98},
                "met": {"added_ttft": added.median <= 2.0, "decode": ratio is not None and ratio >= 0.98}}


def _start_once(run_dir: Path, http_on: bool, index: int) -> dict[str, float]:
    """One fresh daemon to its "ready" line and back down: its logged startup_s and spawn-to-ready."""
    work = run_dir / f"startup-{'on' if http_on else 'off'}-{index}"
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
    env.update({"PYTHONUNBUFFERED": "1", "EDGED_HTTP__ENABLED": "true" if http_on else "false"})
    log_path = work / "edged.log"
    with log_path.open("wb") as log:
        spawned = time.perf_counter()
        proc = procs.spawn([str(VENV_PYTHON), "-m", "edged", "serve", "--socket", str(work / "edged.sock"),
                            "--state-dir", str(work / "state")], stdout=log, stderr=subprocess.STDOUT, env=env,
                           cwd=REPO)
    ready: dict[str, Any] = {}

    def logged_ready() -> bool:
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "ready":
                ready.update(event, wall_s=time.perf_counter() - spawned)
                return True
        return False

    answered: dict[str, float] = {}

    def health_answers() -> bool:
        connection = UnixHTTPConnection(work / "http.sock", 5.0)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                answered["wall_s"] = time.perf_counter() - spawned
                return True
        except OSError:
            pass
        finally:
            connection.close()
        return False

    try:
        procs.wait_until(logged_ready, proc, 120.0, "edged serve", log_path)
        if http_on:  # the sockets exist before READY; the server takes them over right after it
            procs.wait_until(health_answers, proc, 60.0, "edged's HTTP API", log_path)
    finally:
        procs.stop(proc, grace_s=30.0)
    result = {"startup_s": float(ready["startup_s"]), "spawn_to_ready_s": float(ready["wall_s"])}
    if answered:
        result["ready_to_http_answer_s"] = answered["wall_s"] - result["spawn_to_ready_s"]
    return result


class HttpStartupScenario(Scenario):
    name = "http-startup"
    requires = frozenset({HTTP_API})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        rounds = 2 if settings.quick else 10
        runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
        for index in range(rounds):
            order = (True, False) if index % 2 == 0 else (False, True)
            for http_on in order:
                result = _start_once(target.context.run_dir, http_on, index)
                runs["on" if http_on else "off"].append(result)
                log(f"    start #{index + 1:<3} http {'on ' if http_on else 'off'} startup "
                    f"{result['startup_s'] * 1000:7.1f} ms, spawn to ready {result['spawn_to_ready_s'] * 1000:7.1f} ms")
        added = {key: statistics.median(on[key] - off[key] for on, off in zip(runs["on"], runs["off"])) * 1000
                 for key in ("startup_s", "spawn_to_ready_s")}
        first_answer_ms = statistics.median(run["ready_to_http_answer_s"] for run in runs["on"]) * 1000
        log(f"    HTTP on adds {added['startup_s']:.1f} ms to start-up (median of {rounds} pairs; target <= 30 ms), "
            f"{added['spawn_to_ready_s']:.1f} ms spawn to ready; /health answers {first_answer_ms:.1f} ms after ready")
        return {"runs": runs, "added_ms": added, "target_ms": 30.0, "met": added["startup_s"] <= 30.0,
                "ready_to_http_answer_ms": first_answer_ms}
