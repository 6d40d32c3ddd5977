"""What a benchmark target is: something that starts, answers streamed chat requests, and stops.

A target that runs as its own process exposes `pid`, so the runner can read its peak RSS and the
idle-CPU scenario can watch it; one that runs inside the benchmark process leaves `pid` as None.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.settings import BenchSettings

# Capabilities, checked by scenarios (Scenario.requires).
CHAT = "chat"          # answers streamed chat requests: chat(messages, max_tokens)
PROCESS = "process"    # is a separate process: pid is set while running
SERVER = "server"      # a long-running service, whose CPU use while idle matters
EDGED_DAEMON = "edged-daemon"   # edged's daemon, whose engine can also be driven in-process for comparison
SEALED_SOCKET = "sealed-socket"  # edged's daemon with a client allowed to send sealed requests on its socket
POWER_PROFILES = "power-profiles"  # edged's daemon whose power profile the benchmark may switch
SEAL_MICRO = "seal-micro"       # e2e-v1 sealing and opening, in the benchmark process (no model)
WYOMING = "wyoming"             # edged's daemon with a Wyoming handle server: transcript(text)
STRUCTURED = "structured"    # edged asked for JSON schemas (llguidance and its index stay in memory)
PREFIX_RELOAD = "prefix-reload"  # edged with the prefix state on, restarted and reloaded by the scenario


@dataclass(frozen=True)
class EngineShape:
    """The llama.cpp settings every target gets, taken from edged's benchmark profile so all match."""

    threads: int
    context: int
    batch: int
    kv_cache_type: str
    mmap: bool


@dataclass
class TargetContext:
    settings: BenchSettings
    model_path: Path
    engine: EngineShape
    llama_cpp_bin: Path | None      # llama.cpp build's bin/ (None with --skip-build)
    run_dir: Path                   # scratch for this run's sockets, logs and state


@dataclass
class StartupInfo:
    ready_s: float                          # process start (or object creation) -> ready to answer
    details: dict[str, Any] = field(default_factory=dict)   # e.g. the model load time inside it


class Target(ABC):
    name: str = ""                  # registry key, also used on the command line
    label: str = ""                 # for tables and plots
    capabilities: frozenset[str] = frozenset({CHAT})
    needs_llama_cpp_build: bool = False

    def __init__(self, context: TargetContext) -> None:
        self.context = context

    @abstractmethod
    def start(self) -> StartupInfo:
        """Start and wait until ready; raise RuntimeError with the reason (and a log tail) on failure."""

    @abstractmethod
    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        """Send one greedy, streamed chat request and time it."""

    @abstractmethod
    def stop(self) -> dict[str, Any]:
        """Stop and free everything; returns facts only known at the end (e.g. exit status)."""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this target cannot run on this machine or tree (the run skips it and says so), or None."""
        return None

    @property
    def pid(self) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        """How this target was run (command line, settings) for the report."""
        return {}
