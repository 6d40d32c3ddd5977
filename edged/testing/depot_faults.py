"""TEST HOOK: chunk faults the depot injects when EDGED_TEST_DEPOT_FAULTS is set (never from config or options)."""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from typing import Final

from pydantic import Field, ValidationError

from edged.errors import ConfigError
from edged.fleet.messages import encode_chunk
from edged.validation import StrictModel

# e.g. EDGED_TEST_DEPOT_FAULTS="drop=0.05,dup=0.05,reorder=0.1,garble=0.05,truncate=0.02,stale=0.05,seed=7":
# each number is a probability per chunk. Not `EDGED_*`: the daemon reads those as config overrides.
FAULTS_ENV: Final = "EDGED_TEST_DEPOT_FAULTS"  # see edged/testing: the one seam for test hooks


class FaultPlan(StrictModel):
    drop: float = Field(default=0.0, ge=0, le=1, description="chunk not sent")
    dup: float = Field(default=0.0, ge=0, le=1, description="chunk sent twice")
    reorder: float = Field(default=0.0, ge=0, le=1, description="chunk held back and sent after the next one")
    garble: float = Field(default=0.0, ge=0, le=1, description="one data byte flipped after hashing")
    truncate: float = Field(default=0.0, ge=0, le=1, description="data cut short, header fixed to match")
    stale: float = Field(default=0.0, ge=0, le=1, description="an extra copy labelled with the previous version")
    seed: int = Field(default=0, ge=0, description="random seed, for repeatable runs")


def plan_from_env(environ: Mapping[str, str]) -> FaultPlan | None:
    text = environ.get(FAULTS_ENV, "").strip()
    if not text:
        return None
    values: dict[str, float | int] = {}
    try:
        for item in text.split(","):
            name, _, number = item.partition("=")
            values[name.strip()] = int(number) if name.strip() == "seed" else float(number)
        return FaultPlan.model_validate(values)
    except (ValueError, ValidationError) as exc:
        raise ConfigError(f"{FAULTS_ENV}={text!r}: {exc}") from None


class FaultInjector:
    """Turns one frame into the frames actually sent; thread-safe, deterministic for one seed and order."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self._random = random.Random(plan.seed)
        self._lock = threading.Lock()
        self._held: bytes | None = None
        self.counts: dict[str, int] = {}

    def apply(self, channel: str, version: int, artifact: str, index: int, data: bytes) -> list[bytes]:
        with self._lock:
            roll = self._random.random
            plan = self.plan
            frames: list[bytes] = []
            if roll() < plan.stale and version > 1:
                frames.append(encode_chunk(channel, version - 1, artifact, index, data))
                self._count("stale")
            if roll() < plan.drop:
                self._count("drop")
            elif roll() < plan.garble and data:
                garbled = bytearray(encode_chunk(channel, version, artifact, index, data))
                garbled[-1 - self._random.randrange(len(data))] ^= 0x5A
                frames.append(bytes(garbled))
                self._count("garble")
            elif roll() < plan.truncate and len(data) > 1:
                short = encode_chunk(channel, version, artifact, index, data[: len(data) // 2])
                frames.append(short)  # self-consistent frame, wrong length for its index
                self._count("truncate")
            else:
                frames.append(encode_chunk(channel, version, artifact, index, data))
                if roll() < plan.dup:
                    frames.append(frames[-1])
                    self._count("dup")
            if frames and roll() < plan.reorder and self._held is None:
                self._held = frames.pop()
                self._count("reorder")
            elif self._held is not None:
                frames.append(self._held)
                self._held = None
            return frames

    def flush(self) -> list[bytes]:
        """A frame still held back for reordering goes out now."""
        with self._lock:
            held, self._held = self._held, None
        return [held] if held is not None else []

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

