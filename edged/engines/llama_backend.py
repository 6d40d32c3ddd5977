"""llama.cpp's ctypes bindings, loaded once, with the CPU kernels that fit the CPU this runs on.

A portable engine build (scripts/build-engine) carries one CPU backend module per instruction-set
variant (libggml-cpu-haswell.so, libggml-cpu-armv8.2_2.so, ...). ggml's loader scores each against
the running CPU and keeps the best. The loader must be called through libllama's own handle: a
second `CDLL("libggml.so")` would be another copy of ggml's registry, with no backends in it.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edged.errors import EngineError

GGML_LOG_LEVEL_ERROR = 3
VARIANT_MODULE = re.compile(r"libggml-cpu-(?P<variant>[\w.]+)\.so$")
_state: dict[str, Any] = {}
_CALLBACKS: list[Any] = []  # ctypes callbacks must outlive every call llama.cpp makes to them


@dataclass(frozen=True)
class CpuBackend:
    """Which llama.cpp kernels this process runs: shown by `edged doctor` and logged at start."""

    engine_version: str
    ggml_version: str
    ggml_commit: str
    variant: str  # e.g. "haswell", "armv8.2_2"; "built-in" for a build without run-time dispatch
    available_variants: tuple[str, ...]
    features: dict[str, str] = field(default_factory=dict)


class _Feature(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_char_p)]


def _quiet_logs(level: int, text: bytes, _user_data: Any) -> None:
    # llama.cpp narrates every load step on stderr; only its errors are worth a line in our log.
    if level == GGML_LOG_LEVEL_ERROR and text:
        sys.stderr.write(text.decode("utf-8", "replace"))


def _import_bindings() -> Any:
    """`import llama_cpp` also imports numpy, jinja chat formats and the high-level `Llama` class
    (about 100 ms at every start on a Pi-class CPU), none of which the engine uses. The package is
    entered without running its __init__ and removed again, so a later `import llama_cpp` elsewhere
    still gets the full package (and reuses these bindings)."""
    bindings = sys.modules.get("llama_cpp.llama_cpp")
    if bindings is not None:
        return bindings
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None:
        raise EngineError("llama-cpp-python is not installed; run scripts/setup")
    try:
        if "llama_cpp" in sys.modules:
            return importlib.import_module("llama_cpp.llama_cpp")
        sys.modules["llama_cpp"] = importlib.util.module_from_spec(spec)
        try:
            return importlib.import_module("llama_cpp.llama_cpp")
        finally:
            del sys.modules["llama_cpp"]
    except (OSError, RuntimeError) as exc:
        # A libllama.so for another architecture or a missing library: ctypes says "wrong ELF class"
        # or "cannot open shared object file" deep inside the package.
        raise EngineError(f"the llama.cpp engine library cannot be loaded ({exc}); it was built for another "
                          "machine or is incomplete: run scripts/setup again, or install the bundle "
                          "for this architecture") from None


def lib_dir(bindings: Any) -> Path:
    return Path(getattr(bindings, "_base_path", Path(bindings.__file__).parent / "lib"))


def variant_modules(directory: Path) -> list[str]:
    try:
        names = sorted(entry.name for entry in directory.iterdir())
    except OSError as exc:
        raise EngineError(f"cannot read the engine's CPU variant directory {directory}: {exc.strerror}; "
                          "check its permissions or run scripts/setup again") from None
    return [match["variant"] for name in names if (match := VARIANT_MODULE.match(name))]


def _load_cpu_variants(bindings: Any) -> None:
    lib = bindings._lib
    directory = lib_dir(bindings)
    if not variant_modules(directory):
        return  # a build without run-time dispatch: its CPU backend is linked into libggml
    lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_load_all_from_path.restype = None
    lib.ggml_backend_load_all_from_path(str(directory).encode())
    lib.ggml_backend_reg_count.restype = ctypes.c_size_t
    if lib.ggml_backend_reg_count() == 0:
        raise EngineError(f"none of the engine's CPU variants in {directory} runs on this CPU (or they cannot "
                          "be read); the engine was built for another architecture: run scripts/setup again")


def bindings() -> Any:
    """The bindings, with llama.cpp's logging quieted and the CPU variants loaded (once)."""
    if "bindings" in _state:
        return _state["bindings"]
    module = _import_bindings()
    callback = module.llama_log_callback(_quiet_logs)
    _CALLBACKS.append(callback)
    module.llama_log_set(callback, None)
    _load_cpu_variants(module)
    _state["bindings"] = module
    return module


def loaded_variant() -> str:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    found = {match["variant"] for line in maps.splitlines() if (match := VARIANT_MODULE.search(line.strip()))}
    return ",".join(sorted(found)) or "built-in"


def _features(lib: Any) -> dict[str, str]:
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    reg = lib.ggml_backend_reg_by_name(b"CPU")
    if not reg:
        return {}
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    address = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_get_features")
    if not address:
        return {}
    get = ctypes.CFUNCTYPE(ctypes.POINTER(_Feature), ctypes.c_void_p)(address)
    array, out = get(reg), {}
    for i in range(256):
        item = array[i]
        if not item.name:
            break
        out[item.name.decode()] = (item.value or b"").decode()
    return out


def _text(lib: Any, name: str) -> str:
    try:
        function = getattr(lib, name)
    except AttributeError:
        return "unknown"
    function.restype = ctypes.c_char_p
    value = function()
    return value.decode() if value else "unknown"


def cpu_backend() -> CpuBackend:
    module = bindings()
    lib = module._lib
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415  (doctor and start only)

    try:
        engine_version = version("llama_cpp_python")
    except PackageNotFoundError:
        engine_version = "unknown"
    return CpuBackend(engine_version=engine_version, ggml_version=_text(lib, "ggml_version"),
                      ggml_commit=_text(lib, "ggml_commit"), variant=loaded_variant(),
                      available_variants=tuple(variant_modules(lib_dir(module))), features=_features(lib))
