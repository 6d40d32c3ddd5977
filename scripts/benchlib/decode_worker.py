"""`python decode_worker.py MODEL THREADS BATCH CONTEXT KV TOKENS REPS`: edged's engine decode rate, as JSON.

Run with the Python of a venv that holds one engine build (portable or native), so two builds can be
compared on the same machine in alternating processes. Needs only the engine path of edged
(PYTHONPATH=the repo) plus pydantic and structlog.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. Do not stop early."


def main() -> None:
    model, threads, batch, context, kv, tokens, reps = sys.argv[1:8]
    from edged.engines.base import EngineSettings, SamplingParams
    from edged.engines.llama import LlamaEngine
    from edged.engines.llama_backend import cpu_backend
    from edged.messages import ChatMessage

    engine = LlamaEngine(Path(model))
    engine.load(EngineSettings(threads=int(threads), batch=int(batch), context=int(context), kv_cache_type=kv))
    messages = [ChatMessage(role="user", content=PROMPT)]
    params = SamplingParams(max_tokens=int(tokens))
    engine.generate(messages, None, params, lambda _text: True)  # warm-up
    rates = []
    for _ in range(int(reps)):
        result = engine.generate(messages, None, params, lambda _text: True)
        if result.decode_s > 0 and result.completion_tokens > 1:
            rates.append((result.completion_tokens - 1) / result.decode_s)
    engine.unload()
    print(json.dumps({"variant": cpu_backend().variant, "decode_tokens_per_s": rates}))


if __name__ == "__main__":
    main()
