"""TTFT of the first request after the model was reloaded, for a ~300-token system prompt seen before.

Issue 16's target: the first request after a restart, a profile switch and an idle unload starts
(nearly) warm, ≤ 1.5 × the warm TTFT, because the KV state of the system prompt is kept on disk
(`[model] prefix_cache_bytes`) and put back when the model loads. Each round:

- restart: the daemon is stopped (SIGTERM) and started again on the same state directory; asked once
  it is ready;
- profile switch: `profile set balanced` (another context and batch: a reload), asked once the status
  shows the reloaded model; then back to `performance`, asked again (a second switch sample);
- idle unload: the target's `performance` profile unloads after a few idle seconds; once the status
  shows no model, the next request loads it again. That TTFT includes the model load itself, which no
  prefix state can save: it is reported apart with the daemon's queue wait (the load happens while the
  request waits).

Every sample records `prompt_cached_tokens` from the daemon, which shows whether the state was used.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable

from benchlib.prompts import long_system_prompt, prefix_messages
from benchlib.samples import RequestSample, Summary
from benchlib.scenarios.base import Log, Scenario, describe_sample
from benchlib.settings import EDGED_PROFILE, BenchSettings
from benchlib.targets.base import PREFIX_RELOAD, Target
from benchlib.targets.edged_prefix import IDLE_UNLOAD_S, SWITCH_PROFILE, EdgedPrefixTarget

TTFT_LIMIT_RATIO = 1.5
WAIT_S = 60.0
KINDS = ("restart", "profile_switch", "idle_unload")


def _wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _model_context(target: EdgedPrefixTarget) -> int | None:
    model = target.control("status").get("model")
    return None if model is None else int(model["context"])


class PrefixReloadScenario(Scenario):
    name = "prefix-reload"
    requires = frozenset({PREFIX_RELOAD})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        assert isinstance(target, EdgedPrefixTarget)
        shared, max_tokens = long_system_prompt(), settings.prefix_max_tokens
        questions = itertools.count(1)

        def ask(tag: str) -> RequestSample:
            sample = target.chat(prefix_messages(shared, next(questions) % 16 + 1), max_tokens, tag)
            log(f"    {tag:<18} {describe_sample(sample)}, cached {self._cached(sample)} prompt tokens")
            return sample

        ask("prime")  # decoded once and saved to the prefix store
        warm = [ask(f"warm-{i}") for i in range(settings.prefix_requests)]
        after: dict[str, list[RequestSample]] = {kind: [] for kind in KINDS}
        performance_context = _model_context(target)
        for round_index in range(max(2, settings.prefix_requests // 2)):
            target.stop()
            target.start()
            after["restart"].append(ask(f"restart-{round_index}"))
            target.control("profile", set=SWITCH_PROFILE)
            _wait_for("the switched profile's model", lambda: _model_context(target) not in (None, performance_context))
            after["profile_switch"].append(ask(f"to-{SWITCH_PROFILE}-{round_index}"))
            target.control("profile", set=EDGED_PROFILE)
            _wait_for("the performance model", lambda: _model_context(target) == performance_context)
            after["profile_switch"].append(ask(f"to-{EDGED_PROFILE}-{round_index}"))
            _wait_for("the idle unload", lambda: _model_context(target) is None)
            after["idle_unload"].append(ask(f"after-unload-{round_index}"))
        warm_ttft = Summary.of([s.ttft_s * 1000 for s in warm])
        assert warm_ttft is not None
        results: dict[str, Any] = {"warm": self._summary(warm), "system_prompt_chars": len(shared),
                                   "idle_unload_after_s": IDLE_UNLOAD_S, "switch_profile": SWITCH_PROFILE,
                                   "limit_ratio": TTFT_LIMIT_RATIO}
        for kind, samples in after.items():
            summary = self._summary(samples)
            summary["ratio_to_warm"] = summary["ttft_ms_median"] / warm_ttft.median if warm_ttft.median else None
            results[kind] = summary
            log(f"    {kind}: TTFT median {summary['ttft_ms_median']:.1f} ms = "
                f"{summary['ratio_to_warm']:.2f}x warm ({warm_ttft.median:.1f} ms)")
        return results

    @staticmethod
    def _cached(sample: RequestSample) -> int | None:
        value = sample.server.get("edged", {}).get("prompt_cached_tokens")
        return value if isinstance(value, int) else None

    def _summary(self, samples: list[RequestSample]) -> dict[str, Any]:
        ttft = Summary.of([s.ttft_s * 1000 for s in samples])
        queue = Summary.of([float(s.server.get("edged", {}).get("queue_ms") or 0.0) for s in samples])
        assert ttft is not None and queue is not None
        return {"ttft_ms_median": ttft.median, "ttft_ms_max": ttft.maximum, "queue_ms_median": queue.median,
                "ttft_minus_queue_ms_median": Summary.of([s.ttft_s * 1000 - float(s.server.get("edged", {})
                                                          .get("queue_ms") or 0.0) for s in samples]).median,
                "cached_prompt_tokens": [self._cached(s) for s in samples], "count": len(samples),
                "samples": [s.to_json() for s in samples]}
