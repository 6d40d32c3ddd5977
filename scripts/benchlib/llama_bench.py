"""llama-bench: llama.cpp's own decode (tg) and prompt-processing (pp) rates, the ceiling for everything else."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.samples import Summary
from benchlib.targets.base import EngineShape

# Prompt-processing test size: about the ~300-token system prompt of the prefix-cache scenario.
PROMPT_TOKENS = 300
TIMEOUT_S = 900.0


def run_llama_bench(binary: Path, model: Path, engine: EngineShape, tokens: int, repetitions: int,
                    log_path: Path) -> dict[str, Any]:
    """Run tg<tokens> and pp<PROMPT_TOKENS> in one invocation; returns rates per test with median/p10/p90."""
    cmd = [str(binary), "-m", str(model), "-p", str(PROMPT_TOKENS), "-n", str(tokens),
           "-t", str(engine.threads), "-b", str(engine.batch), "-ub", str(engine.batch),
           "-ctk", engine.kv_cache_type, "-ctv", engine.kv_cache_type,
           "-r", str(repetitions), "-o", "json"]   # mmap only changes load time, which llama-bench doesn't time
    with log_path.open("wb") as log:
        proc = procs.spawn(cmd, stdout=subprocess.PIPE, stderr=log)
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            procs.stop(proc)
            raise RuntimeError(f"llama-bench took longer than {TIMEOUT_S:.0f} s" + procs.log_tail(log_path)) from None
        procs.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed with status {proc.returncode}" + procs.log_tail(log_path))
    try:
        rows = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"llama-bench printed no JSON: {out[:300]!r}" + procs.log_tail(log_path)) from None
    tests: dict[str, Any] = {}
    for row in rows:
        kind = "decode" if row.get("n_gen", 0) > 0 else "prompt"
        rates = Summary.of([float(v) for v in row.get("samples_ts", [])])
        tests[kind] = {"test": f"tg{row['n_gen']}" if kind == "decode" else f"pp{row['n_prompt']}",
                       "avg_tokens_per_s": row.get("avg_ts"), "stddev_tokens_per_s": row.get("stddev_ts"),
                       "tokens_per_s": rates.__dict__ if rates else None, "repetitions": len(row.get("samples_ts", []))}
    first = rows[0] if rows else {}
    return {"command": " ".join(cmd), "tests": tests, "build_commit": first.get("build_commit"),
            "cpu_info": first.get("cpu_info"), "flash_attn": first.get("flash_attn"), "log": str(log_path)}
