"""How long after the core's first token the voice client gets its first `handled-chunk` (issue 14: ≤ 5 ms median).

Every chat prompt goes out as a Wyoming transcript, repeated; per request the client's time to the first
handled-chunk minus the core's own TTFT (its `request` log line) is what the Wyoming path adds. The
prompt cache makes repeated prompts fast, which does not matter here: both times are of the same request.
"""

from __future__ import annotations

from typing import Any, Protocol

from benchlib.prompts import CHAT_PROMPTS, WARMUP_PROMPT
from benchlib.samples import Summary
from benchlib.scenarios.base import Log, Scenario
from benchlib.settings import BenchSettings
from benchlib.targets.base import WYOMING, Target


class WyomingDaemon(Protocol):
    def transcript(self, text: str) -> dict[str, Any]: ...


class WyomingLatencyScenario(Scenario):
    name = "wyoming-latency"
    requires = frozenset({WYOMING})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        daemon: WyomingDaemon = target  # type: ignore[assignment]  (WYOMING promises transcript())
        warmup = daemon.transcript(WARMUP_PROMPT)
        log(f"    warm-up  first chunk {warmup['client_first_chunk_ms']:7.1f} ms, core TTFT "
            f"{warmup['core_ttft_ms']:7.1f} ms")
        samples = []
        for round_index in range(settings.repetitions):
            for prompt_id, text in CHAT_PROMPTS.items():
                sample = {"prompt_id": prompt_id, **daemon.transcript(text)}
                samples.append(sample)
                log(f"    #{round_index + 1:<7} {prompt_id:<18} first chunk {sample['client_first_chunk_ms']:7.1f} ms, "
                    f"core TTFT {sample['core_ttft_ms']:7.1f} ms, added {sample['added_ms']:6.2f} ms, "
                    f"{sample['chunks']} chunks")
        added = Summary.of([s["added_ms"] for s in samples])
        assert added is not None
        log(f"    first handled-chunk comes {added.median:.2f} ms after the core's first token "
            f"(median of {added.count}; goal ≤ 5 ms)")
        return {"samples": samples, "added_ms": added.__dict__,
                "client_first_chunk_ms": Summary.of([s["client_first_chunk_ms"] for s in samples]).__dict__,  # type: ignore[union-attr]
                "core_ttft_ms": Summary.of([s["core_ttft_ms"] for s in samples]).__dict__}  # type: ignore[union-attr]
