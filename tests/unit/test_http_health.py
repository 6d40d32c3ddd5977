"""/health: the worker says when it is loading or swapping a model; the service maps that to 200 or 503."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, ClassVar

from edged.config import Config
from edged.engines.base import EngineSettings
from edged.engines.worker import ModelWorker
from edged.events import Events
from edged.http_service import HttpService
from tests.fakes import FakeEngine

SETTINGS = EngineSettings(threads=1, batch=64, context=512, kv_cache_type="f16", mmap=True, mlock=False)


class SlowLoad(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def load(self, settings: EngineSettings) -> Any:
        self.release.wait(30)
        return super().load(settings)


def test_worker_activity_while_loading_and_swapping() -> None:
    async def main() -> list[str | None]:
        first, second = SlowLoad(), SlowLoad()
        worker = ModelWorker(first)
        seen: list[str | None] = [worker.activity]
        loading = asyncio.create_task(worker.load(SETTINGS))
        await asyncio.sleep(0)  # the task runs up to its first wait: the thread is now loading
        seen.append(worker.activity)
        first.release.set()
        await loading
        seen.append(worker.activity)
        swapping = asyncio.create_task(worker.replace_engine(second, SETTINGS))
        await asyncio.sleep(0)  # the task runs up to its first wait: the thread is now loading
        seen.append(worker.activity)
        second.release.set()
        await swapping
        seen.append(worker.activity)
        worker.shutdown()
        return seen

    assert asyncio.run(main()) == [None, "loading", None, "swapping", None]


class Control:
    profiles: ClassVar[dict[str, None]] = {"eco": None}

    def __init__(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error

    def model_state(self) -> tuple[str, str | None]:
        return self.state, self.error

    def model_name(self) -> str:
        return "m"

    def describe(self) -> dict[str, Any]:
        return {"model": {"name": "m", "format": "gguf"}, "profile": "eco"}


def health(state: str, error: str | None = None) -> tuple[int, dict[str, Any]]:
    service = HttpService(Config(), core=None, control=Control(state, error), events=Events(),  # type: ignore[arg-type]
                          energy=None, socket_path=Path("/tmp/x.sock"), state_dir=Path("/tmp"),  # type: ignore[arg-type]
                          plaintext=({0}, set()), mqtt=lambda: None)
    return service.health()


def test_health_codes_and_bodies() -> None:
    assert health("ready") == (200, {"status": "ready", "model": "m", "profile": "eco"})
    assert health("unloaded") == (200, {"status": "ready", "model": "m", "profile": "eco", "model_loaded": False})
    assert health("loading") == (503, {"status": "loading", "model": "m", "profile": "eco"})
    assert health("swapping")[0] == 503 and health("swapping")[1]["status"] == "swapping"
    assert health("unavailable", "bad gguf") == (503, {"status": "unavailable", "model": "m", "profile": "eco",
                                                       "error": "bad gguf"})
