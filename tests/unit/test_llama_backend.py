"""The portable engine's CPU variants: found, loaded through libllama, reported; bad installs named clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edged.engines import llama_backend
from edged.errors import EngineError


def test_variant_modules_are_found_by_name(tmp_path: Path) -> None:
    for name in ("libggml-cpu-haswell.so", "libggml-cpu-armv8.2_2.so", "libggml-base.so", "libllama.so"):
        (tmp_path / name).write_bytes(b"")
    assert llama_backend.variant_modules(tmp_path) == ["armv8.2_2", "haswell"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any directory")
def test_an_unreadable_variant_directory_is_one_clear_error(tmp_path: Path) -> None:
    tmp_path.chmod(0)
    try:
        with pytest.raises(EngineError, match="cannot read the engine's CPU variant directory"):
            llama_backend.variant_modules(tmp_path)
    finally:
        tmp_path.chmod(0o755)


def test_a_missing_variant_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="run scripts/setup again"):
        llama_backend.variant_modules(tmp_path / "gone")


def test_missing_bindings_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(__import__("sys").modules, "llama_cpp.llama_cpp", raising=False)
    monkeypatch.setattr(llama_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(EngineError, match="not installed; run scripts/setup"):
        llama_backend._import_bindings()


def test_the_installed_engine_runs_on_this_cpu_with_a_dispatched_variant() -> None:
    backend = llama_backend.cpu_backend()
    assert backend.engine_version == "0.3.16"
    # A portable build ships several variants and loads exactly one that fits this CPU.
    assert len(backend.available_variants) >= 2, backend
    assert backend.variant in backend.available_variants
    assert "sapphirerapids" not in backend.available_variants  # AMX: upstream llama.cpp PR #26954
    assert backend.features, "the CPU backend reports its features"
