"""On a real board: power while generating and J/token per profile, through `edged serve` with the demo model."""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.daemon, when run as `pytest hw-tests/`

from tests.daemon import DaemonProcess  # noqa: E402

PROMPTS = ["Write a long story about a lighthouse keeper.", "Explain in detail how a bicycle works.",
           "Describe the four seasons in a long essay."]
ROUNDS = int(os.environ.get("EDGED_HW_ROUNDS", "2"))


def generate(daemon: DaemonProcess, profile: str) -> dict[str, Any]:
    with daemon.client() as client:
        client.control("profile", set=profile)
        finals = []
        for _ in range(ROUNDS):
            for prompt in PROMPTS:
                events = list(client.ask({"messages": [{"role": "user", "content": prompt}], "max_tokens": 96,
                                          "stream": True}))
                finals.append(events[-1])
    joules = sum(f["edged"]["energy_j"] for f in finals)
    tokens = sum(f["usage"]["completion_tokens"] for f in finals)
    seconds = sum(f["edged"]["total_ms"] for f in finals) / 1000
    return {"profile": profile, "requests": len(finals), "tokens": tokens, "energy_j": joules,
            "j_per_token": joules / tokens, "avg_power_w": joules / seconds,
            "decode_tokens_per_s_median": statistics.median(f["edged"]["decode_tokens_per_s"] for f in finals),
            "energy_source": finals[-1]["edged"]["energy_source"]}


def test_eco_spends_less_than_performance(tmp_path: Path, report: dict[str, Any]) -> None:
    daemon = DaemonProcess(tmp_path / "daemon", "--profile", "performance").start()
    try:
        results = {name: generate(daemon, name) for name in ("performance", "balanced", "eco")}
    finally:
        assert daemon.stop() == 0
    report["results"]["generation"] = results
    eco, performance = results["eco"], results["performance"]
    estimated = eco["energy_source"] == "estimate"
    report["results"]["generation_note"] = ("energy is an ESTIMATE from CPU time (no power sensor)" if estimated
                                            else f"energy measured by {eco['energy_source']}")
    assert eco["j_per_token"] < performance["j_per_token"] or eco["avg_power_w"] < performance["avg_power_w"]
