"""edged with its ONNX engine: the demo GGUF converted by `edged convert onnx`, served with `--model DIR`.

Compared with the `edged` target (the same daemon on the GGUF with llama.cpp) in the same run: tokens/s,
TTFT, peak RSS and J/token. The conversion is cached in bench-work/onnx/, keyed by the GGUF file and the
converter's source, so it runs once until either changes; its time is reported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib.settings import REPO, VENV_PYTHON, WORK_DIR
from benchlib.targets.base import CHAT, PROCESS, SERVER, StartupInfo
from benchlib.targets.edged_socket import EdgedSocketTarget

CONVERT_TIMEOUT_S = 3600.0
ONNX_CACHE = WORK_DIR / "onnx"
STAMP = "bench-source.json"
# Present when the ONNX work has landed in the tree; until then the target is skipped, not failed.
REQUIRED_FILES = ("edged/commands/convert.py", "edged/engines/onnx.py")
REQUIRED_MODULES = ("onnxruntime", "onnx", "gguf")


def _source_key(gguf: Path) -> dict[str, Any]:
    """What a cached conversion depends on: the GGUF file and the converter's code."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "edged" / "convert").glob("*.py")) + [REPO / REQUIRED_FILES[0]]:
        digest.update(path.read_bytes())
    stat = gguf.stat()
    return {"gguf": str(gguf), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "converter": digest.hexdigest()}


def converted_model(gguf: Path, log_path: Path) -> tuple[Path, float | None]:
    """The ONNX directory for `gguf` (converting it if not cached) and the conversion time (None: cached)."""
    key = _source_key(gguf)
    out = ONNX_CACHE / f"{gguf.stem}-int4"
    stamp = out / STAMP
    if stamp.exists() and json.loads(stamp.read_text()) == key:
        return out, None
    # Convert into a scratch directory and move it into place: an interrupted run leaves no half model.
    scratch = ONNX_CACHE / f".{out.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    ONNX_CACHE.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with log_path.open("wb") as log:
        done = subprocess.run([str(VENV_PYTHON), "-m", "edged", "convert", "onnx", str(gguf), str(scratch)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=REPO, timeout=CONVERT_TIMEOUT_S)
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(f"`edged convert onnx` failed ({done.returncode}):\n" + "\n".join(tail))
    seconds = time.perf_counter() - started
    (scratch / STAMP).write_text(json.dumps(key))
    scratch.rename(out)
    return out, seconds


class EdgedOnnxTarget(EdgedSocketTarget):
    name = "edged-onnx"
    label = "edged ONNX engine (socket)"
    # Not EDGED_DAEMON: the added-TTFT comparison drives llama.cpp's engine in-process, not this one.
    capabilities = frozenset({CHAT, PROCESS, SERVER})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._model_dir: Path | None = None
        self._convert_s: float | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        missing = [name for name in REQUIRED_FILES if not (REPO / name).exists()]
        missing += [name for name in REQUIRED_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            return f"needs {', '.join(missing)}"
        # The files can be in the tree before the command is wired into edged's CLI.
        probe = subprocess.run([str(VENV_PYTHON), "-m", "edged", "convert", "onnx", "--help"], capture_output=True,
                               text=True, cwd=REPO, timeout=60)
        if probe.returncode != 0:
            if "invalid choice: 'convert'" in probe.stderr:
                return "`edged convert` is not a command of edged's CLI yet (edged/cli.py does not register it)"
            last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
            return f"`edged convert onnx --help` failed: {last}"
        return None

    def prepare(self) -> None:
        self._model_dir, self._convert_s = converted_model(self.context.model_path, self._dir / "convert.log")

    def serve_args(self) -> list[str]:
        assert self._model_dir is not None
        return [*super().serve_args(), "--model", str(self._model_dir)]

    def start(self) -> StartupInfo:
        info = super().start()
        info.details["convert_s"] = self._convert_s
        info.details["model_dir"] = str(self._model_dir)
        return info

    def describe(self) -> dict[str, Any]:
        converted = ("converted in this run in " + f"{self._convert_s:.0f} s" if self._convert_s is not None
                     else "cached conversion")
        return {**super().describe(), "model": f"{self._model_dir} (`edged convert onnx`, int4; {converted})"}
