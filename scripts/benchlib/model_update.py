"""Model-update transfer throughput: the real depot and the real device pull loop through a local mosquitto.

`benchlib.throughput.measure_transfer` signs a release of random bytes, serves it with a `Depot`
and pulls it with the device's `ChunkTransfer` (both in this process, each with its own broker
connection), so the figure is a lower bound for two processes on two machines. Measured for the two
chunk sizes the issue names; the targets table reports the smaller chunk size (the harder case).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from benchlib.mosquitto import Broker, mosquitto_binary

PAYLOAD_BYTES = 64 * 1024 * 1024   # about the size of a small quantised model
CHUNK_SIZES = (64 * 1024, 256 * 1024)


def measure_model_update(run_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    if mosquitto_binary() is None:
        return {"measured": False, "reason": "mosquitto is not installed"}
    from benchlib.throughput import measure_transfer

    log("\n== model-update transfer (benchlib.throughput.measure_transfer) ==")
    broker = Broker(run_dir / "transfer-broker").start()
    runs: dict[str, Any] = {}
    try:
        for chunk in CHUNK_SIZES:
            try:
                result = measure_transfer(broker.url, chunk, PAYLOAD_BYTES)
            except Exception as exc:  # noqa: BLE001  (a broken measurement must not lose the rest of the run)
                log(f"    {chunk // 1024} KiB chunks: FAILED: {exc}")
                return {"measured": False, "error": f"{type(exc).__name__}: {exc}"}
            rate = result["bytes"] / result["seconds"]
            log(f"    {chunk // 1024} KiB chunks: {rate / 1e6:.1f} MB/s ({result['bytes']} bytes in "
                f"{result['seconds']:.2f} s)")
            runs[f"{chunk // 1024}KiB"] = {**result, "bytes_per_s": rate}
    finally:
        broker.stop()
    smallest = runs[f"{CHUNK_SIZES[0] // 1024}KiB"]
    return {"measured": True, "bytes_per_s": smallest["bytes_per_s"], "bytes": smallest["bytes"],
            "seconds": smallest["seconds"], "by_chunk_size": runs}
