"""Hook: model-update transfer throughput (edged/fleet), reported as "not measured" until it is wired up.

The chunked pull of a model update (edged.fleet) will get a benchmark function of its own. When it
exists, point TRANSFER_FUNCTION at it as "module:function". The contract the benchmark expects:

    def measure(work_dir: pathlib.Path, payload_bytes: int) -> dict
        Push `payload_bytes` of model update through the real transfer path (local depot or broker,
        its choice), in `work_dir`, and return at least {"bytes": int, "seconds": float}; any other
        JSON-ready keys (chunk size, re-requests, broker) are kept in the raw results and shown.

The report's targets table then shows MB/s instead of "not measured" (report_sections.model_update_row).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

TRANSFER_FUNCTION = ""   # e.g. "edged.fleet.<module>:<function>"; empty = not measured
PAYLOAD_BYTES = 64 * 1024 * 1024   # about the size of a small quantised model


def measure_model_update(run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    if not TRANSFER_FUNCTION:
        return {"measured": False, "reason": "no transfer benchmark function in edged/fleet yet "
                                             "(benchlib/model_update.py: TRANSFER_FUNCTION)"}
    module_name, _, function_name = TRANSFER_FUNCTION.partition(":")
    log(f"\n== model-update transfer ({TRANSFER_FUNCTION}) ==")
    try:
        function = getattr(importlib.import_module(module_name), function_name)
        work_dir = run_dir / "model-update"
        work_dir.mkdir(parents=True, exist_ok=True)
        result = dict(function(work_dir, PAYLOAD_BYTES))
        throughput = result["bytes"] / result["seconds"]
    except Exception as exc:  # noqa: BLE001  (a broken hook must not lose the rest of the run)
        log(f"    FAILED: {exc}")
        return {"measured": False, "error": f"{type(exc).__name__}: {exc}", "function": TRANSFER_FUNCTION}
    log(f"    {throughput / 1e6:.1f} MB/s ({result['bytes']} bytes in {result['seconds']:.2f} s)")
    return {"measured": True, "function": TRANSFER_FUNCTION, "bytes_per_s": throughput, **result}
