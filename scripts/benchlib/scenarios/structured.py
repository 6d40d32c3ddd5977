"""What constrained decoding costs on the edged daemon (issue 17): decode speed with a JSON schema
against the same prompts unconstrained, a schema's compile time on first use, and the TTFT a cached
grammar adds.

All three come from the daemon's own `edged` statistics of streamed requests over its socket, paired
request by request (constrained, then unconstrained, same prompt) so slow drifts in background load
cancel. The compile time is the TTFT of a schema the daemon has never seen minus the TTFT of the same
schema once cached; the vocabulary index that the first constrained request after a load builds is
paid in a warm-up and reported on its own.
"""

from __future__ import annotations

from typing import Any

from benchlib.prompts import CHAT_PROMPTS, chat_messages
from benchlib.samples import Summary
from benchlib.scenarios.base import Log, Scenario
from benchlib.settings import BenchSettings
from benchlib.targets.base import STRUCTURED, Target

from edged.clients.socket import SocketClient, answer_of, json_schema_format


def ten_properties(tag: str) -> dict[str, Any]:
    """A 10-property object of every common kind; `tag` makes each one a schema the daemon has not seen."""
    kinds = [{"type": "string", "maxLength": 24}, {"type": "integer", "minimum": 0, "maximum": 10_000},
             {"type": "boolean"}, {"enum": ["low", "mid", "high"]}, {"type": ["number", "null"]}]
    properties = {f"{tag}_{i}": kinds[i % len(kinds)] for i in range(10)}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


class StructuredScenario(Scenario):
    name = "structured"
    requires = frozenset({STRUCTURED})

    def _ask(self, target: Target, messages: Any, max_tokens: int, schema: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0}
        if schema is not None:
            body["response_format"] = json_schema_format(schema)
        with SocketClient(target.socket_path, timeout=300) as client:  # type: ignore[attr-defined]
            answer = answer_of(client.ask(body))
        stats = answer.final.get("edged", {})
        return {"ttft_ms": stats.get("ttft_ms"), "decode_tokens_per_s": stats.get("decode_tokens_per_s"),
                "tokens": answer.final.get("usage", {}).get("completion_tokens"), "finish": answer.finish_reason}

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        schema = ten_properties("field")
        warm = self._ask(target, chat_messages("warm-up"), 8, schema)  # builds the vocabulary index
        pairs = []
        for _ in range(settings.repetitions):
            for prompt_id in CHAT_PROMPTS:
                messages = chat_messages(prompt_id)
                constrained = self._ask(target, messages, settings.tokens, schema)
                plain = self._ask(target, messages, settings.tokens, None)
                pairs.append({"prompt_id": prompt_id, "constrained": constrained, "plain": plain})
        ratio = Summary.of([p["constrained"]["decode_tokens_per_s"] / p["plain"]["decode_tokens_per_s"]
                            for p in pairs if p["plain"]["decode_tokens_per_s"] and
                            p["constrained"]["decode_tokens_per_s"]])
        # TTFT of a cached grammar over no grammar, with the same prompt and KV-cache state (max 4 tokens).
        added, compile_ms = [], []
        prompt_ids = list(CHAT_PROMPTS)
        for index in range(2 * settings.repetitions + 2):
            messages = chat_messages(prompt_ids[index % len(prompt_ids)])
            fresh = ten_properties(f"f{index}")
            self._ask(target, messages, 1, None)  # the prompt into the KV cache: all three reuse it alike
            first = self._ask(target, messages, 4, fresh)
            cached = self._ask(target, messages, 4, fresh)
            plain = self._ask(target, messages, 4, None)
            compile_ms.append(first["ttft_ms"] - cached["ttft_ms"])
            added.append(cached["ttft_ms"] - plain["ttft_ms"])
        result = {"pairs": pairs, "warm_up": warm,
                  "decode_ratio": ratio.__dict__ if ratio else None,
                  "compile_ms": Summary.of(compile_ms).__dict__, "added_ttft_ms": Summary.of(added).__dict__}
        log(f"    JSON schema decode / unconstrained: {ratio.median if ratio else float('nan'):.2f}x; "
            f"compile {result['compile_ms']['median']:.2f} ms; cached grammar adds "
            f"{result['added_ttft_ms']['median']:.2f} ms TTFT")
        return result
