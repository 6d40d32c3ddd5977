"""Test doubles for unit tests only: a deterministic engine and a fixed energy source."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from edged.engines.base import Engine, EngineSettings, GenerationResult, ModelInfo, SamplingParams, TokenSink
from edged.power.profiles import parse_profile
from edged.summary import RequestSummary


class FakeEngine(Engine):
    def __init__(self, tokens: int = 5, delay_s: float = 0.0) -> None:
        self.tokens = tokens
        self.delay_s = delay_s
        self.loads = 0
        self.unloads = 0
        self.idle_releases = 0
        self.generated_per_call: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, settings: EngineSettings) -> ModelInfo:
        self.loads += 1
        self._loaded = True
        return ModelInfo("fake", "/fake", "fake", 0, 0, settings.context, settings.context, settings.threads)

    def unload(self) -> None:
        self.unloads += 1
        self._loaded = False

    def release_idle(self) -> None:
        self.idle_releases += 1
        super().release_idle()

    def generate(self, messages, prompt, params: SamplingParams, sink: TokenSink) -> GenerationResult:
        self.gate.wait()
        count, finish = 0, "length"
        for i in range(min(self.tokens, params.max_tokens)):
            if self.delay_s:
                time.sleep(self.delay_s)
            count += 1
            if not sink(f"t{i} "):
                finish = "cancelled"
                break
        else:
            finish = "stop" if self.tokens < params.max_tokens else "length"
        self.generated_per_call.append(count)
        return GenerationResult(finish, 3, count, 0, 0.001, 0.01)


@dataclass
class EnergyReport:
    joules: float
    source: str


class FixedEnergy:
    def begin(self) -> float:
        return 0.0

    def end(self, handle: float) -> EnergyReport:
        return EnergyReport(1.5, "test-meter")


def make_profile(name: str = "test", queue_length: int = 8, priorities=("interactive", "normal", "background"),
                 max_tokens: int = 64, unload_after_s: float | None = None, max_tokens_per_s: float | None = None,
                 requests_per_minute: int | None = None):
    pace = {"duty_cycle": 1.0}
    if max_tokens_per_s:
        pace["max_tokens_per_s"] = max_tokens_per_s
    idle = {"unload_after_s": unload_after_s} if unload_after_s else {}
    return parse_profile({
        "name": name, "description": "test profile",
        "engine": {"threads": 1, "batch": 64, "context": 512, "kv_cache_type": "f16", "mmap": True, "mlock": False,
                   "max_tokens": max_tokens},
        "pace": pace, "admission": {"queue_length": queue_length, "priorities": list(priorities),
                      **({"requests_per_minute": requests_per_minute} if requests_per_minute else {})},
        "idle": idle, "updates": {"allow_downloads": True}}, "test")


def summary(outcome: str = "ok", *, transport: str = "unix", priority: str = "normal", profile: str = "balanced",
            **values: Any) -> RequestSummary:
    """A RequestSummary as the core would build it, with the figures a test cares about."""
    return RequestSummary(request_id="0123456789abcdef", transport=transport, peer="test", client=None,
                          priority=priority, profile=profile, outcome=outcome, **values)
