"""edged's own engine (edged.engines.llama.LlamaEngine) driven directly inside the benchmark process.

Same code, same settings and same request order as the daemon, minus everything around it (socket,
framing, JSON, queue, asyncio): the difference in time to first token is what edged adds.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import structlog

from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.targets.base import CHAT, StartupInfo, Target


class InProcessEngineTarget(Target):
    name = "edged-engine"
    label = "edged engine (in-process)"
    capabilities = frozenset({CHAT})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._engine: Any = None

    def start(self) -> StartupInfo:
        # The engine logs "model loaded" through structlog; keep the benchmark's stdout for the results.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        from edged.engines.base import EngineSettings  # noqa: PLC0415  (imports llama_cpp: only when used)
        from edged.engines.llama import LlamaEngine  # noqa: PLC0415

        shape = self.context.engine
        started = time.perf_counter()
        self._engine = LlamaEngine(self.context.model_path)
        self._engine.load(EngineSettings(threads=shape.threads, batch=shape.batch, context=shape.context,
                                         kv_cache_type=shape.kv_cache_type, mmap=shape.mmap))
        elapsed = time.perf_counter() - started
        return StartupInfo(ready_s=elapsed, details={"load_s": elapsed})

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        from edged.engines.base import SamplingParams  # noqa: PLC0415
        from edged.messages import ChatMessage  # noqa: PLC0415

        chat_messages = [ChatMessage(**message) for message in messages]
        times: list[float] = []

        def sink(text: str) -> bool:
            if text:
                times.append(time.perf_counter())
            return True

        sent = time.perf_counter()
        result = self._engine.generate(chat_messages, None, SamplingParams(max_tokens=max_tokens, temperature=0.0),
                                       sink)
        if not times:
            raise RuntimeError("the in-process engine produced no text")
        return RequestSample(prompt_id=prompt_id, ttft_s=times[0] - sent, first_to_last_s=times[-1] - times[0],
                             completion_tokens=result.completion_tokens, finish_reason=result.finish_reason,
                             prompt_tokens=result.prompt_tokens, cached_prompt_tokens=result.cached_prompt_tokens,
                             token_source="engine")

    def stop(self) -> dict[str, Any]:
        if self._engine is not None:
            self._engine.unload()
            self._engine = None
        return {}

    def describe(self) -> dict[str, Any]:
        return {"note": "edged.engines.llama.LlamaEngine in the benchmark process, same settings as the daemon"}
