"""The portable engine build against a native one on this machine, in one run, alternating.

Portable (scripts/build-engine's default: GGML_NATIVE=OFF, run-time CPU dispatch) must decode at
≥ 0.97 × a `-march=native` build of the same llama.cpp, both through llama-bench and through edged's
own engine. Each engine wheel lives in its own small venv under bench-work/ so the two can run in
alternating processes with nothing else different.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import enginebuild
from benchlib.build import BuildError, ensure_built
from benchlib.settings import REPO, WORK_DIR
from benchlib.targets.base import EngineShape

Logger = Callable[[str], None]
FLAVOURS = ("portable", "native")
TARGET_RATIO = 0.97
WORKER = Path(__file__).with_name("decode_worker.py")


def _engine_venv(flavour: str, log: Logger) -> Path:
    try:
        wheel = enginebuild.build(enginebuild.host_arch(), flavour == "native", sys.executable)
    except SystemExit as exc:
        raise BuildError(f"the {flavour} engine did not build: {exc}") from None
    venv = WORK_DIR / f"engine-venv-{flavour}"
    stamp = venv / ".wheel"
    if stamp.exists() and stamp.read_text() == str(wheel):
        return venv / "bin" / "python"
    log(f"portable-vs-native: a venv with the {flavour} engine ({wheel.name})")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(wheel), "pydantic>=2.7", "structlog>=24.1"], check=True)
    stamp.write_text(str(wheel))
    return venv / "bin" / "python"


def _edged_decode(python: Path, model: Path, engine: EngineShape, tokens: int, reps: int) -> dict[str, Any]:
    command = [str(python), str(WORKER), str(model), str(engine.threads), str(engine.batch), str(engine.context),
               engine.kv_cache_type, str(tokens), str(reps)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={"PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(f"decode worker failed ({done.returncode}): {done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _llama_bench_tg(binary: Path, model: Path, engine: EngineShape, tokens: int, reps: int) -> list[float]:
    command = [str(binary), "-m", str(model), "-p", "0", "-n", str(tokens), "-t", str(engine.threads),
               "-r", str(reps), "-o", "json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({done.returncode}): {done.stderr[-1500:]}")
    return [float(v) for row in json.loads(done.stdout) for v in row.get("samples_ts", [])]


def measure_portable_vs_native(model: Path, engine: EngineShape, tokens: int, rounds: int,
                               log: Logger) -> dict[str, Any]:
    builds = {flavour: ensure_built(log, flavour=flavour, targets=("llama-bench",)) for flavour in FLAVOURS}
    pythons = {flavour: _engine_venv(flavour, log) for flavour in FLAVOURS}
    result: dict[str, Any] = {flavour: {"edged_decode_tokens_per_s": [], "llama_bench_tg_tokens_per_s": [],
                                        "options": builds[flavour].options} for flavour in FLAVOURS}
    for round_no in range(rounds):
        for flavour in FLAVOURS if round_no % 2 == 0 else reversed(FLAVOURS):
            entry = result[flavour]
            decoded = _edged_decode(pythons[flavour], model, engine, tokens, reps=2)
            entry["variant"] = decoded["variant"]
            entry["edged_decode_tokens_per_s"] += decoded["decode_tokens_per_s"]
            entry["llama_bench_tg_tokens_per_s"] += _llama_bench_tg(builds[flavour].binary("llama-bench"), model,
                                                                    engine, tokens, reps=2)
        log(f"portable-vs-native: round {round_no + 1}/{rounds} done")
    ratios = {}
    for key in ("edged_decode_tokens_per_s", "llama_bench_tg_tokens_per_s"):
        portable, native = (statistics.median(result[f][key]) for f in FLAVOURS)
        result["portable"][f"{key}_median"], result["native"][f"{key}_median"] = portable, native
        ratios[key] = portable / native if native else None
    result["ratios"] = ratios
    result["target_ratio"] = TARGET_RATIO
    return result
