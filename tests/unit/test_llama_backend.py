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


def test_a_variant_directory_the_kernel_refuses_is_one_clear_error_even_for_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As root (CI, the arm64 lane) chmod cannot make a directory unreadable, so the refusal is the
    # kernel's answer as Python gets it: PermissionError from listing it.
    real_iterdir = Path.iterdir

    def refuse(self: Path):  # type: ignore[no-untyped-def]
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", refuse)
    with pytest.raises(EngineError) as raised:
        llama_backend.variant_modules(tmp_path)
    message = str(raised.value)
    assert f"cannot read the engine's CPU variant directory {tmp_path}: Permission denied" in message
    assert "check its permissions or run scripts/setup again" in message


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
