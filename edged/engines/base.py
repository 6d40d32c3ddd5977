"""The engine interface: load, generate with a per-token sink that can stop it, unload, model info."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from edged.messages import ChatMessage

if TYPE_CHECKING:
    from edged.engines.prefix_store import PrefixStore


@dataclass(frozen=True)
class EngineSettings:
    """What a power profile sets on the engine; a change to any of these needs a reload."""

    threads: int = 2
    batch: int = 256
    context: int = 2048
    kv_cache_type: str = "f16"
    mmap: bool = True
    mlock: bool = False


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # llguidance grammar (edged/structured/grammar.py) every token must follow
    tools: tuple[Any, ...] = ()  # wire.Tool objects to describe in the prompt


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    format: str
    size_bytes: int
    parameters: int
    context: int
    context_train: int
    threads: int
    # Who made the model and which version it is, as the file says (GGUF general.*; empty if it does not).
    author: str = ""
    url: str = ""
    version: str = ""


@dataclass
class GenerationResult:
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    prompt_s: float  # prompt processing time: request start to first sampled token
    decode_s: float  # first sampled token to the end


class TokenSink(Protocol):
    def __call__(self, text: str) -> bool:
        """Receive the next piece of text; return False to stop generating at once."""


class Engine(ABC):
    """One loaded model. Every method is called from the single worker thread only."""

    @abstractmethod
    def load(self, settings: EngineSettings) -> ModelInfo:
        """Load the model with these settings (unloading a previous load first)."""

    @abstractmethod
    def generate(self, messages: list[ChatMessage] | None, prompt: str | None,
                 params: SamplingParams, sink: TokenSink) -> GenerationResult:
        """Generate for a chat (rendered with the model's template) or a raw prompt."""

    @abstractmethod
    def unload(self) -> None:
        """Free the model's memory; load() brings it back."""

    def release_idle(self) -> None:
        """Free what an idle model holds; load() brings it back. Engines that can keep something cheap to
        keep (the GGUF engine's mmapped weights) override this; the rest unload."""
        self.unload()

    @property
    @abstractmethod
    def loaded(self) -> bool:
        """Whether a model is in memory now."""

    def use_prefix_store(self, store: PrefixStore | None) -> None:  # noqa: B027  (optional for engines)
        """Keep the KV state of prompt preambles in ``store`` across loads; engines that cannot ignore it."""
