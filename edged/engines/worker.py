"""The one thread that touches the model: load, generate and unload all run here, in order."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import structlog

from edged.engines.base import Engine, EngineSettings, GenerationResult, ModelInfo, SamplingParams, TokenSink
from edged.engines.prefix_store import PrefixStore
from edged.errors import EngineError, ModelUnavailable
from edged.messages import ChatMessage

logger = structlog.get_logger(__name__)
T = TypeVar("T")


class ModelWorker:
    """Serialises every engine call onto a single named thread and tracks its progress for the watchdog."""

    def __init__(self, engine: Engine, prefix_store: PrefixStore | None = None) -> None:
        self._engine = engine
        self._prefix_store = prefix_store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edged-model")
        self.info: ModelInfo | None = None
        self.settings: EngineSettings | None = None
        self.load_error: str | None = None
        # Monotonic time of the last sign of life from the model thread, and when the current call began.
        self.last_progress = time.monotonic()
        self.busy_since: float | None = None
        self.activity: str | None = None  # "loading" or "swapping" while the model thread does that (/health)

    @property
    def loaded(self) -> bool:
        return self.info is not None

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, fn, *args)

    def _timed(self, fn: Callable[..., T], *args: object) -> T:
        self.busy_since = self.last_progress = time.monotonic()
        try:
            return fn(*args)
        finally:
            self.busy_since = None
            self.last_progress = time.monotonic()

    def stalled_for(self, now: float) -> float:
        """Seconds the model thread has been inside one call without reporting progress (0 when idle)."""
        return 0.0 if self.busy_since is None else now - self.last_progress

    async def load(self, settings: EngineSettings) -> ModelInfo:
        self._engine.use_prefix_store(self._prefix_store)  # also for an engine swapped in by an update
        swapping = self.activity == "swapping"
        self.activity = self.activity or "loading"
        try:
            info = await self._call(self._engine.load, settings)
        except EngineError as exc:
            self.info, self.load_error = None, str(exc)
            raise
        finally:
            if not swapping:
                self.activity = None
        self.info, self.settings, self.load_error = info, settings, None
        return info

    async def unload(self, *, idle: bool = False) -> None:
        """`idle`: free what an idle model holds (Engine.release_idle), else everything."""
        if self.info is None:
            return
        await self._call(self._engine.release_idle if idle else self._engine.unload)
        self.info = None
        logger.info("model released while idle" if idle else "model unloaded")

    async def replace_engine(self, engine: Engine, settings: EngineSettings) -> ModelInfo:
        """Unload the current model and load `engine` in its place; on failure the caller swaps back."""
        self.activity = "swapping"
        try:
            await self.unload()
            self._engine = engine
            return await self.load(settings)
        finally:
            self.activity = None

    async def generate(self, messages: list[ChatMessage] | None, prompt: str | None,
                       params: SamplingParams, sink: TokenSink) -> GenerationResult:
        if self.info is None:
            raise ModelUnavailable(self.load_error or "the model is not loaded")

        def tracked(text: str) -> bool:
            self.last_progress = time.monotonic()
            return sink(text)

        return await self._call(self._engine.generate, messages, prompt, params, tracked)

    def shutdown(self) -> None:
        """Join the model thread, then close the engine. Normally it is unloaded already; a load whose
        awaiter was cancelled (a start that failed) may have finished since, and is freed here (the
        model thread has ended, so nothing else touches the engine)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._engine.unload()
        if self._prefix_store is not None:
            self._prefix_store.close()
