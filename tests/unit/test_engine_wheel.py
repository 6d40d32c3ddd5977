"""scripts/build-engine's wheel check: libraries for the target machine, the right CPU variants."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-engine"
EM_X86_64, EM_AARCH64 = 62, 183
AARCH64_VARIANTS = ("armv8.0_1", "armv8.2_1", "armv8.2_2", "armv8.2_3", "armv8.6_1", "armv8.6_2")


def load_build_engine():
    loader = importlib.machinery.SourceFileLoader("build_engine", str(SCRIPT))
    spec = importlib.util.spec_from_loader("build_engine", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


build_engine = load_build_engine()


def elf(machine: int) -> bytes:
    """The first bytes of a 64-bit little-endian ELF shared object for `machine`."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    return ident + (3).to_bytes(2, "little") + machine.to_bytes(2, "little") + bytes(44)


def make_wheel(path: Path, machine: int = EM_AARCH64, variants=AARCH64_VARIANTS,
               odd: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("libllama.so", "libggml.so", "libggml-base.so", *(f"libggml-cpu-{v}.so" for v in variants)):
            archive.writestr(f"llama_cpp/lib/{name}", elf(machine))
        archive.writestr("llama_cpp/__init__.py", "")
        for name, data in (odd or {}).items():
            archive.writestr(name, data)
    return path


def test_a_good_aarch64_wheel_passes(tmp_path):
    assert build_engine.check_wheel(make_wheel(tmp_path / "w.whl"), "aarch64") == []


def test_host_binaries_in_a_cross_build_are_named(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", variants=AARCH64_VARIANTS[:3],
                       odd={"llama_cpp/lib/libggml-cpu-armv8.2_3.so": elf(EM_X86_64)})
    problems = build_engine.check_wheel(wheel, "aarch64")
    assert problems == ["llama_cpp/lib/libggml-cpu-armv8.2_3.so is built for x86_64, not aarch64"]


def test_a_whole_wheel_for_the_other_machine_fails_on_every_library(tmp_path):
    problems = build_engine.check_wheel(make_wheel(tmp_path / "w.whl", machine=EM_X86_64), "aarch64")
    assert len(problems) == 3 + len(AARCH64_VARIANTS)
    assert all("built for x86_64, not aarch64" in problem for problem in problems)


def test_the_sme_variant_must_be_left_out(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", variants=(*AARCH64_VARIANTS, "armv9.2_1"))
    assert build_engine.check_wheel(wheel, "aarch64") == [
        "the CPU variant armv9.2_1 is in the wheel but must be left out (see the docstring)"]


def test_missing_pi_variants_are_named(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", variants=("armv8.6_1",))
    assert build_engine.check_wheel(wheel, "aarch64") == [
        "the CPU variant armv8.0_1 is missing", "the CPU variant armv8.2_1 is missing",
        "the CPU variant armv8.2_2 is missing"]


def test_a_native_build_needs_no_variants_but_the_right_machine(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", variants=())
    assert build_engine.check_wheel(wheel, "aarch64", portable=False) == []


@pytest.mark.parametrize("data", [b"", b"#!/bin/sh\n", b"\x7fELF\x02"])
def test_a_library_that_is_not_elf_is_named(tmp_path, data):
    wheel = make_wheel(tmp_path / "w.whl", odd={"llama_cpp/lib/libextra.so.1": data})
    assert build_engine.check_wheel(wheel, "aarch64") == ["llama_cpp/lib/libextra.so.1 is not an ELF shared library"]


def test_not_a_zip_and_no_libllama(tmp_path):
    junk = tmp_path / "junk.whl"
    junk.write_bytes(b"not a zip")
    assert build_engine.check_wheel(junk, "aarch64")[0].startswith("cannot read")
    empty = tmp_path / "empty.whl"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("llama_cpp/__init__.py", "")
    assert build_engine.check_wheel(empty, "aarch64", portable=False) == ["no llama_cpp/lib/libllama.so in the wheel"]


def test_check_option_exits_non_zero_and_says_why(tmp_path):
    wheel = make_wheel(tmp_path / "w.whl", machine=EM_X86_64)
    done = subprocess.run([sys.executable, str(SCRIPT), "--arch", "aarch64", "--check", str(wheel)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "libllama.so is built for x86_64, not aarch64" in done.stderr
    good = make_wheel(tmp_path / "good.whl")
    done = subprocess.run([sys.executable, str(SCRIPT), "--arch", "aarch64", "--check", str(good)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
