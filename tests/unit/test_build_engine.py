"""scripts/build-engine: a portable wheel cached by version and flags; no compiler is one clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-engine"
sys.path.insert(0, str(SCRIPT.parent))
import enginebuild  # noqa: E402


def test_the_cache_key_changes_with_the_flags_and_the_target() -> None:
    portable = enginebuild.cache_key("x86_64", enginebuild.build_flags("x86_64", native=False))
    assert portable != enginebuild.cache_key("aarch64", enginebuild.build_flags("aarch64", native=False))
    if enginebuild.host_arch() == "x86_64":
        assert portable != enginebuild.cache_key("x86_64", enginebuild.build_flags("x86_64", native=True))


def test_portable_is_the_default_and_never_native() -> None:
    flags = enginebuild.build_flags(enginebuild.host_arch(), native=False)
    assert "-DGGML_NATIVE=OFF" in flags and "-DGGML_CPU_ALL_VARIANTS=ON" in flags and "-DGGML_OPENMP=OFF" in flags
    assert not any("march=native" in flag or flag == "-DGGML_NATIVE=ON" for flag in flags)


def test_dropping_variants_is_idempotent_and_notices_a_changed_list(tmp_path: Path) -> None:
    cmake = tmp_path / "ggml" / "src" / "CMakeLists.txt"
    cmake.parent.mkdir(parents=True)
    cmake.write_text("ggml_add_cpu_backend_variant(haswell AVX2)\n"
                     "        ggml_add_cpu_backend_variant(sapphirerapids SSE42 AMX_TILE AMX_INT8)\n")
    enginebuild.drop_variants(tmp_path, "x86_64")
    enginebuild.drop_variants(tmp_path, "x86_64")
    text = cmake.read_text()
    assert "haswell" in text and "ggml_add_cpu_backend_variant(sapphirerapids" not in text
    cmake.write_text("ggml_add_cpu_backend_variant(haswell AVX2)\n")
    with pytest.raises(SystemExit):
        enginebuild.drop_variants(tmp_path, "x86_64")


def test_no_compiler_is_one_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={"PATH": str(tmp_path), "EDGED_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)})
    assert done.returncode == 1
    assert "building the engine needs" in done.stderr and "apt-get install" in done.stderr
    assert "offline bundle" in done.stderr and "Traceback" not in done.stderr


def test_native_cannot_be_combined_with_another_architecture(tmp_path: Path) -> None:
    other = "aarch64" if enginebuild.host_arch() == "x86_64" else "x86_64"
    done = subprocess.run([sys.executable, str(SCRIPT), "--arch", other], capture_output=True, text=True,
                          timeout=60, env={"PATH": str(tmp_path), "EDGED_NATIVE": "1",
                                           "EDGED_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 1 and "this machine only" in done.stderr
