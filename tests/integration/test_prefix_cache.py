"""Persistent prefix state with the real model: a system prompt seen before starts warm after any reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from edged.engines.base import EngineSettings, SamplingParams
from edged.engines.llama import LlamaEngine
from edged.engines.prefix_store import PrefixStore
from edged.messages import ChatMessage

pytestmark = pytest.mark.slow
SYSTEM = ("You are the voice assistant of a delivery van. " * 30).strip()  # ~300 tokens
SETTINGS = EngineSettings(threads=2, batch=256, context=1024)


def ask(engine: LlamaEngine, question: str) -> tuple[str, int]:
    pieces: list[str] = []
    messages = [ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=question)]
    result = engine.generate(messages, None, SamplingParams(max_tokens=12), lambda text: pieces.append(text) or True)
    return "".join(pieces), result.cached_prompt_tokens


def engine_with_store(demo_model: Path, directory: Path, settings: EngineSettings = SETTINGS) -> LlamaEngine:
    engine = LlamaEngine(demo_model)
    engine.use_prefix_store(PrefixStore(directory, 64 * 1024 * 1024))
    engine.load(settings)
    return engine


def test_a_system_prompt_seen_before_is_warm_after_a_reload_and_a_restart(demo_model: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "prefix-cache"
    engine = engine_with_store(demo_model, store_dir)
    _, cached = ask(engine, "Where is the next stop?")
    assert cached == 0
    warm_answer, warm_cached = ask(engine, "How much fuel is left?")
    assert warm_cached > 250  # the system part is reused in-process
    engine._prefixes.flush()  # type: ignore[union-attr]
    assert list(store_dir.glob("*.kv"))

    engine.unload()  # an idle unload or a profile switch that reloads the model
    engine.load(SETTINGS)
    answer, cached = ask(engine, "How much fuel is left?")
    assert cached >= warm_cached and answer == warm_answer
    engine.unload()

    restarted = engine_with_store(demo_model, store_dir)  # a new process: a new engine and store object
    answer, cached = ask(restarted, "How much fuel is left?")
    assert cached >= warm_cached and answer == warm_answer
    restarted.unload()


def test_a_corrupt_state_is_ignored_and_the_answer_is_unchanged(demo_model: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "prefix-cache"
    engine = engine_with_store(demo_model, store_dir)
    ask(engine, "Where is the next stop?")
    expected, _ = ask(engine, "Is the door locked?")
    engine._prefixes.flush()  # type: ignore[union-attr]
    engine.unload()
    for path in store_dir.glob("*.kv"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    fresh = engine_with_store(demo_model, store_dir)
    answer, cached = ask(fresh, "Is the door locked?")
    assert cached == 0 and answer == expected
    assert not any(store_dir.glob("*.kv")) or all(p.read_bytes() != b"" for p in store_dir.glob("*.kv"))
    fresh.unload()


def test_another_context_size_gets_the_state_with_the_same_answer(demo_model: Path, tmp_path: Path) -> None:
    # A profile switch that changes only the context size (performance 4096 -> balanced 2048) starts warm.
    store_dir = tmp_path / "prefix-cache"
    engine = engine_with_store(demo_model, store_dir)
    ask(engine, "Where is the next stop?")
    engine._prefixes.flush()  # type: ignore[union-attr]
    engine.unload()
    smaller = EngineSettings(threads=2, batch=256, context=512)
    plain = LlamaEngine(demo_model)
    plain.load(smaller)
    expected, _ = ask(plain, "Is the door locked?")
    plain.unload()
    other = engine_with_store(demo_model, store_dir, smaller)
    answer, cached = ask(other, "Is the door locked?")
    assert cached > 250 and answer == expected
    other.unload()


def test_a_state_longer_than_the_context_is_skipped_and_kept(demo_model: Path, tmp_path: Path) -> None:
    store_dir = tmp_path / "prefix-cache"
    engine = engine_with_store(demo_model, store_dir)
    ask(engine, "Where is the next stop?")
    engine._prefixes.flush()  # type: ignore[union-attr]
    engine.unload()
    saved = sorted(p.name for p in store_dir.glob("*.kv"))
    tiny = engine_with_store(demo_model, store_dir, EngineSettings(threads=2, batch=256, context=256))
    tiny.unload()  # loading did not try the 300-token state in a 256-token context, nor throw it away
    assert sorted(p.name for p in store_dir.glob("*.kv")) == saved
    again = engine_with_store(demo_model, store_dir)
    _, cached = ask(again, "Is the door locked?")
    assert cached > 250
    again.unload()


def test_an_idle_release_keeps_mapped_weights_and_starts_warm(demo_model: Path, tmp_path: Path) -> None:
    engine = engine_with_store(demo_model, tmp_path / "prefix-cache")
    ask(engine, "Where is the next stop?")
    warm_answer, warm_cached = ask(engine, "How much fuel is left?")
    weights = engine._model
    engine.release_idle()
    assert not engine.loaded and engine._model is weights  # the context is gone, the mapping stays
    engine.load(SETTINGS)
    assert engine._model is weights  # no second load of the file
    answer, cached = ask(engine, "How much fuel is left?")
    assert cached >= warm_cached and answer == warm_answer
    engine.release_idle()
    engine.load(EngineSettings(threads=2, batch=256, context=1024, mmap=False))  # other weights settings
    assert engine._model is not weights
    engine.release_idle()  # weights in anonymous memory go with the rest
    assert engine._model is None and not engine.loaded
    engine.unload()
