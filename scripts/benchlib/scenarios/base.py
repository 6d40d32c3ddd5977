"""What a scenario is: something done to a running target that returns JSON-ready measurements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable

from benchlib.samples import RequestSample
from benchlib.settings import BenchSettings
from benchlib.targets.base import Target

Log = Callable[[str], None]


def describe_sample(sample: RequestSample) -> str:
    rate = sample.decode_tokens_per_s
    return (f"ttft {sample.ttft_s * 1000:7.1f} ms, {sample.completion_tokens:3d} tokens "
            f"({sample.finish_reason}), {rate:6.1f} tok/s" if rate else f"ttft {sample.ttft_s * 1000:7.1f} ms")


class Scenario(ABC):
    name: str = ""
    requires: frozenset[str] = frozenset()

    def applies_to(self, target: Target) -> bool:
        return self.requires <= target.capabilities

    @abstractmethod
    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        """Measure; raise RuntimeError to mark this scenario failed for this target."""
