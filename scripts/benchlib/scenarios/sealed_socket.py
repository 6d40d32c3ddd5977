"""Sealed against plaintext requests over the same daemon's Unix socket, interleaved.

Both arms go to one daemon, so a request must never follow one with the same prompt (it would find its
whole prompt in the cache and look fast). The prompts therefore go round in their fixed order while the
arm alternates request by request, and the arm of the first request flips every round: over two rounds
each prompt is sent once plaintext and once sealed, four requests apart, each after a different prompt
(the same prompt-cache reuse for every request). The pair for a prompt cancels slow drifts in load.
"""

from __future__ import annotations

import statistics
from typing import Any, Protocol

from benchlib.prompts import CHAT_PROMPTS, Messages, chat_messages
from benchlib.samples import RequestSample, Summary, summarize_requests
from benchlib.scenarios.base import Log, Scenario, describe_sample
from benchlib.settings import BenchSettings
from benchlib.targets.base import SEALED_SOCKET, Target

PLAIN, SEALED = "plaintext", "sealed"


class SealedSocketDaemon(Protocol):
    def socket_chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample: ...
    def sealed_socket_chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample: ...


class SealedSocketScenario(Scenario):
    name = "sealed-socket"
    requires = frozenset({SEALED_SOCKET})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        daemon: SealedSocketDaemon = target  # type: ignore[assignment]  (SEALED_SOCKET promises both methods)
        ask = {PLAIN: daemon.socket_chat, SEALED: daemon.sealed_socket_chat}
        for arm in (PLAIN, SEALED):   # the first sealed request also fetches and verifies the prekey
            warmup = ask[arm](chat_messages("warm-up"), settings.tokens, "warm-up")
            log(f"    warm-up  {arm:<10} {describe_sample(warmup)}")
        rounds = 2 * settings.repetitions
        samples: dict[str, list[RequestSample]] = {PLAIN: [], SEALED: []}
        by_round: list[dict[str, tuple[str, RequestSample]]] = []
        for round_index in range(rounds):
            this_round: dict[str, tuple[str, RequestSample]] = {}
            for index, prompt_id in enumerate(CHAT_PROMPTS):
                arm = SEALED if (index + round_index) % 2 else PLAIN
                sample = ask[arm](chat_messages(prompt_id), settings.tokens, prompt_id)
                samples[arm].append(sample)
                this_round[prompt_id] = (arm, sample)
                log(f"    #{round_index + 1:<7} {arm:<10} {prompt_id:<18} {describe_sample(sample)}")
            by_round.append(this_round)
        pairs = []
        for first, second in zip(by_round[0::2], by_round[1::2]):
            for prompt_id in CHAT_PROMPTS:
                arms = dict([first[prompt_id], second[prompt_id]])
                pairs.append({"prompt_id": prompt_id, "plaintext_ttft_s": arms[PLAIN].ttft_s,
                              "sealed_ttft_s": arms[SEALED].ttft_s})
        added = Summary.of([(p["sealed_ttft_s"] - p["plaintext_ttft_s"]) * 1000 for p in pairs])
        assert added is not None
        summaries = {arm: summarize_requests(samples[arm]) for arm in (PLAIN, SEALED)}
        rates = {arm: (summaries[arm]["decode_tokens_per_s"] or {}).get("median") for arm in (PLAIN, SEALED)}
        log(f"    sealed adds {added.median:.2f} ms TTFT over plaintext (median of {added.count} pairs); decode "
            f"{rates[SEALED] or 0:.1f} vs {rates[PLAIN] or 0:.1f} tok/s")
        return {"samples": {arm: [s.to_json() for s in samples[arm]] for arm in (PLAIN, SEALED)},
                "summary": summaries, "pairs": pairs, "added_ms": added.__dict__,
                "decode_ratio_sealed_over_plaintext": (rates[SEALED] / rates[PLAIN]
                                                       if rates[SEALED] and rates[PLAIN] else None),
                "ttft_ms_median": {arm: statistics.median(s.ttft_s * 1000 for s in samples[arm])
                                   for arm in (PLAIN, SEALED)}}
