"""The scenarios every chat target gets: chat, prefix cache, edged's added TTFT, idle CPU."""

from __future__ import annotations

import time
from typing import Any

from benchlib import procs
from benchlib.prompts import CHAT_PROMPTS, chat_messages, long_system_prompt, prefix_messages
from benchlib.samples import RequestSample, Summary, summarize_requests
from benchlib.scenarios.base import Log, Scenario, describe_sample
from benchlib.settings import BenchSettings
from benchlib.targets.base import CHAT, EDGED_DAEMON, SERVER, Target
from benchlib.targets.inprocess_engine import InProcessEngineTarget


class ChatScenario(Scenario):
    """The fixed chat prompts, each `repetitions` times, after one discarded warm-up request."""

    name = "chat"
    requires = frozenset({CHAT})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        # The first request of a fresh process pays for page faults and lazy set-up; report it, don't count it.
        warmup = target.chat(chat_messages("warm-up"), settings.tokens, "warm-up")
        log(f"    warm-up  {'(own prompt)':<18} {describe_sample(warmup)}")
        samples: list[RequestSample] = []
        for repetition in range(settings.repetitions):
            for prompt_id in CHAT_PROMPTS:
                sample = target.chat(chat_messages(prompt_id), settings.tokens, prompt_id)
                samples.append(sample)
                log(f"    #{repetition + 1:<7} {prompt_id:<18} {describe_sample(sample)}")
        return {"warmup": warmup.to_json(), "samples": [s.to_json() for s in samples],
                "summary": summarize_requests(samples)}


class PrefixCacheScenario(Scenario):
    """Time to first token with a reused ~300-token system prompt against a fresh one every time."""

    name = "prefix-cache"
    requires = frozenset({CHAT})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        count, max_tokens = settings.prefix_requests, settings.prefix_max_tokens
        shared = long_system_prompt()
        # Priming request: puts the shared prompt in the cache (not measured).
        target.chat(prefix_messages(shared, 0), max_tokens, "prefix-prime")
        reused = [target.chat(prefix_messages(shared, i), max_tokens, f"reused-{i}") for i in range(1, count + 1)]
        # Same user questions, but each under its own system prompt: nothing beyond the role header to reuse.
        fresh = [target.chat(prefix_messages(long_system_prompt(session=i), i), max_tokens, f"fresh-{i}")
                 for i in range(1, count + 1)]
        reused_ttft = Summary.of([s.ttft_s * 1000 for s in reused])
        fresh_ttft = Summary.of([s.ttft_s * 1000 for s in fresh])
        assert reused_ttft and fresh_ttft
        ratio = fresh_ttft.median / reused_ttft.median if reused_ttft.median > 0 else None
        log(f"    prefix cache: reused median {reused_ttft.median:.1f} ms, fresh median {fresh_ttft.median:.1f} ms"
            + (f", fresh/reused {ratio:.2f}x" if ratio else ""))
        return {"reused": {"samples": [s.to_json() for s in reused], "summary": summarize_requests(reused)},
                "fresh": {"samples": [s.to_json() for s in fresh], "summary": summarize_requests(fresh)},
                "system_prompt_chars": len(shared),
                "ttft_ratio_fresh_over_reused": ratio}


class AddedTtftScenario(Scenario):
    """TTFT edged adds over its own engine: each request to the daemon, then the same one in-process.

    Alternating request by request cancels slow drifts in background load, which would otherwise dominate
    a difference of a few milliseconds. Both see the same request sequence, so the same prompt-cache reuse.
    """

    name = "added-ttft"
    requires = frozenset({EDGED_DAEMON})
    max_tokens = 16   # only the first token matters; the rest just keeps the caches in the same state

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        engine = InProcessEngineTarget(target.context)
        engine.start()
        try:
            for each in (target, engine):
                each.chat(chat_messages("warm-up"), self.max_tokens, "warm-up")
            pairs = []
            for _ in range(2 * settings.repetitions):
                for prompt_id in CHAT_PROMPTS:
                    daemon = target.chat(chat_messages(prompt_id), self.max_tokens, prompt_id)
                    in_process = engine.chat(chat_messages(prompt_id), self.max_tokens, prompt_id)
                    pairs.append({"prompt_id": prompt_id, "daemon_ttft_s": daemon.ttft_s,
                                  "in_process_ttft_s": in_process.ttft_s,
                                  "daemon_reported_ttft_ms": daemon.server.get("edged", {}).get("ttft_ms")})
        finally:
            engine.stop()
        added = Summary.of([(p["daemon_ttft_s"] - p["in_process_ttft_s"]) * 1000 for p in pairs])
        assert added is not None
        log(f"    edged adds {added.median:.2f} ms TTFT (median of {added.count} alternating pairs)")
        return {"pairs": pairs, "added_ms": added.__dict__, "max_tokens": self.max_tokens}


class IdleCpuScenario(Scenario):
    """CPU the target burns while nobody asks it anything (timers, watchdogs, busy polling)."""

    name = "idle-cpu"
    requires = frozenset({SERVER})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        pid = target.pid
        assert pid is not None
        window = settings.idle_window_s
        log(f"    idle for {window:.0f} s ...")
        before, started = procs.cpu_ticks(pid), time.monotonic()
        time.sleep(window)
        after, elapsed = procs.cpu_ticks(pid), time.monotonic() - started
        if before is None or after is None:
            raise RuntimeError(f"{target.label} exited during the idle window")
        cpu_s = (after - before) / procs.CLOCK_TICKS
        percent = 100.0 * cpu_s / elapsed
        log(f"    idle CPU {percent:.2f}% of one core ({cpu_s:.2f} s CPU over {elapsed:.1f} s)")
        return {"window_s": elapsed, "cpu_s": cpu_s, "cpu_percent_of_one_core": percent,
                "rss_bytes_after": procs.rss_bytes(pid)}
