"""llama-server and llama-bench, built once from the llama.cpp that the installed llama-cpp-python vendors.

Building from the sdist of the *installed* version, with the same CPU flags as the installed engine
(scripts/build-engine: portable run-time dispatch by default, native with EDGED_NATIVE=1), means the
baselines run exactly the llama.cpp code and kernels that edged itself runs, so any difference is
edged's, not llama.cpp's; a native peer would also die with SIGILL on CPUs whose AMX it cannot use.
The build lives in bench-work/ and is reused while its recorded version and options still match.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable

import enginebuild  # scripts/build-engine: the engine's own CPU flags and variant list
from benchlib import procs
from benchlib.settings import VENV_PYTHON, WORK_DIR

Logger = Callable[[str], None]

TARGETS = ("llama-server", "llama-bench")
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",              # loopback HTTP only
    "-DLLAMA_BUILD_UI=OFF",             # the web UI needs npm ...
    "-DLLAMA_USE_PREBUILT_UI=OFF",      # ... or a download at build time; the benchmark needs neither
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_CUDA=OFF", "-DGGML_VULKAN=OFF", "-DGGML_METAL=OFF", "-DGGML_OPENCL=OFF",
)


class BuildError(RuntimeError):
    """The sdist could not be fetched or llama.cpp did not build; the message says what to do."""


@dataclass
class LlamaCppBuild:
    llama_cpp_python_version: str
    llama_cpp_commit: str          # short hash from the sdist's CHANGELOG, or "unknown"
    bin_dir: str
    build_seconds: float           # of the build that made these binaries (cached builds keep it)
    built_at: str
    options: list[str]
    flavour: str = "portable"   # the engine's CPU flags: portable run-time dispatch, or native
    reused: bool = False

    def binary(self, name: str) -> Path:
        return Path(self.bin_dir) / name


def installed_llama_cpp_python_version() -> str:
    return version("llama_cpp_python")


def installed_flavour() -> str:
    """`portable` when the installed engine carries CPU variant modules, else `native`."""
    from edged.engines.llama_backend import cpu_backend  # noqa: PLC0415

    return "portable" if cpu_backend().available_variants else "native"


def cpu_options(flavour: str) -> tuple[str, ...]:
    """The engine's own CPU flags (scripts/build-engine), plus how the binaries link for that flavour."""
    if flavour == "portable":
        # Run-time dispatch needs ggml as shared libraries; the binaries find them by their build RPATH.
        return (*enginebuild.PORTABLE_FLAGS, "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=ON")
    return (*enginebuild.NATIVE_FLAGS, "-DGGML_OPENMP=OFF", "-DBUILD_SHARED_LIBS=OFF")


def ensure_built(log: Logger = print, flavour: str | None = None,
                 targets: tuple[str, ...] = TARGETS) -> LlamaCppBuild:
    """Return the llama.cpp binaries, downloading the sdist and building them the first time.

    ``flavour`` is `portable` or `native`; by default the installed engine's.
    """
    wanted = installed_llama_cpp_python_version()
    flavour = flavour or installed_flavour()
    options = [*CMAKE_OPTIONS, *cpu_options(flavour)]
    build_dir = WORK_DIR / f"llama.cpp-build-{wanted}-{flavour}"
    stamp = build_dir / "bench-build.json"
    cached = _read_stamp(stamp)
    if cached and cached.options == options and all(cached.binary(t).exists() for t in targets):
        cached.reused = True
        log(f"llama.cpp: reusing the {flavour} build in {build_dir} (built in {cached.build_seconds:.0f} s)")
        return cached
    source_root = fetch_sdist(wanted, log)
    llama_cpp_dir = source_root / "vendor" / "llama.cpp"
    if flavour == "portable":
        enginebuild.drop_variants(llama_cpp_dir, enginebuild.host_arch())
    commit = llama_cpp_commit(source_root, wanted)
    started = time.monotonic()
    log(f"llama.cpp: building {', '.join(targets)} ({flavour}: {' '.join(cpu_options(flavour))})")
    _cmake(["cmake", "-S", str(llama_cpp_dir), "-B", str(build_dir), *options,
            f"-DLLAMA_BUILD_COMMIT={commit}"], build_dir, "configure", log)
    jobs = str(os.cpu_count() or 2)
    _cmake(["cmake", "--build", str(build_dir), "--config", "Release", "-j", jobs, "--target", *targets],
           build_dir, "build", log)
    result = LlamaCppBuild(llama_cpp_python_version=wanted, llama_cpp_commit=commit,
                           bin_dir=str(build_dir / "bin"), build_seconds=round(time.monotonic() - started, 1),
                           built_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), options=options, flavour=flavour)
    missing = [t for t in targets if not result.binary(t).exists()]
    if missing:
        raise BuildError(f"the build finished but {', '.join(missing)} is missing from {result.bin_dir}")
    stamp.write_text(json.dumps(asdict(result), indent=2))
    log(f"llama.cpp: built {', '.join(TARGETS)} in {result.build_seconds:.0f} s")
    return result


def _read_stamp(stamp: Path) -> LlamaCppBuild | None:
    try:
        data = json.loads(stamp.read_text())
        data.pop("reused", None)
        return LlamaCppBuild(**data)
    except (OSError, ValueError, TypeError):
        return None


def fetch_sdist(wanted: str, log: Logger) -> Path:
    """Download (once) and unpack the sdist; returns the unpacked source root."""
    sdist_dir = WORK_DIR / "sdist"
    source_root = sdist_dir / f"llama_cpp_python-{wanted}"
    if (source_root / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        return source_root
    sdist_dir.mkdir(parents=True, exist_ok=True)
    archive = sdist_dir / f"llama_cpp_python-{wanted}.tar.gz"
    if not archive.exists():
        log(f"llama.cpp: downloading the llama-cpp-python {wanted} sdist from PyPI")
        result = subprocess.run([str(VENV_PYTHON), "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                                 "--disable-pip-version-check", "-d", str(sdist_dir), f"llama-cpp-python=={wanted}"],
                                capture_output=True, text=True)
        if result.returncode != 0 or not archive.exists():
            raise BuildError(f"could not download the llama-cpp-python {wanted} sdist (pip said:\n"
                             f"{result.stderr.strip()[-2000:]})\nrerun with --skip-build to benchmark edged alone")
    log(f"llama.cpp: unpacking {archive.name}")
    with tarfile.open(archive) as tar:
        tar.extractall(sdist_dir, filter="data")
    if not (source_root / "vendor" / "llama.cpp" / "CMakeLists.txt").exists():
        raise BuildError(f"{archive} has no vendor/llama.cpp: is this a llama-cpp-python sdist?")
    return source_root


def llama_cpp_commit(source_root: Path, wanted: str) -> str:
    """The vendored llama.cpp commit: the sdist has no git metadata, but its CHANGELOG names each update.

    The first "update llama.cpp to ...@HASH" at or below this version's heading is the commit it ships.
    """
    try:
        text = (source_root / "CHANGELOG.md").read_text()
    except OSError:
        return "unknown"
    heading = text.find(f"## [{wanted}]")
    if heading < 0:
        return "unknown"
    match = re.search(r"llama\.cpp@([0-9a-f]{7,40})", text[heading:])
    return match.group(1) if match else "unknown"


def _cmake(cmd: list[str], build_dir: Path, step: str, log: Logger) -> None:
    """Run a cmake step, echoing its progress lines and keeping the full output in a log file."""
    build_dir.mkdir(parents=True, exist_ok=True)
    log_path = build_dir / f"bench-{step}.log"
    log(f"llama.cpp: {step}: {' '.join(cmd)}")
    log(f"llama.cpp: full output in {log_path}")
    with log_path.open("wb") as log_file:
        try:
            proc = procs.spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        except FileNotFoundError:
            raise BuildError(f"{cmd[0]} is not installed (apt-get install cmake g++), "
                             "or rerun with --skip-build") from None
        assert proc.stdout is not None
        for raw in proc.stdout:
            log_file.write(raw)
            line = raw.decode(errors="replace").rstrip()
            # Progress lines ("[ 42%] Building CXX object ...") and errors; skip the rest of the noise.
            if line.startswith("[") or "error" in line.lower() or (step == "configure" and "--" not in line):
                print(f"  {line}", flush=True)
        code = proc.wait()
        procs.stop(proc)
    if code != 0:
        raise BuildError(f"llama.cpp {step} failed (exit {code})." + procs.log_tail(log_path, 40) +
                         "\nFix the cause above (cmake and g++ must be installed), or rerun with --skip-build "
                         "to benchmark edged and raw llama-cpp-python only.")


if __name__ == "__main__":
    # `python -m benchlib.build`: build (or check) the baselines without running the benchmark.
    procs.install_cleanup()
    try:
        print(json.dumps(asdict(ensure_built()), indent=2))
    except BuildError as exc:
        sys.exit(f"bench: {exc}")
