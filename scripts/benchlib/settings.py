"""Fixed paths and the settings of one benchmark run (derived from the command line)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORK_DIR = REPO / "bench-work"          # gitignored: sdist, llama.cpp build, per-run scratch, raw JSON
RUN_DIR = WORK_DIR / "run"              # sockets, state dirs and logs of the processes under test
RESULTS_DIR = WORK_DIR / "results"      # raw JSON of every run, for digging into a surprising number
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PROFILES_DIR = REPO / "profiles"
DEFAULT_OUT = REPO / "docs" / "benchmarks.md"
EDGED_PROFILE = "performance"           # the profile the benchmark runs edged with (full speed)


@dataclass(frozen=True)
class BenchSettings:
    threads: int
    tokens: int
    quick: bool
    out: Path
    skip_build: bool
    targets: tuple[str, ...]
    scenarios: tuple[str, ...]

    @property
    def repetitions(self) -> int:
        """How often each chat prompt is sent to each target (after one discarded warm-up request)."""
        return 1 if self.quick else 5

    @property
    def idle_window_s(self) -> float:
        return 5.0 if self.quick else 60.0

    @property
    def prefix_requests(self) -> int:
        """Measured requests per arm of the prefix-cache scenario (the reused arm adds one priming request)."""
        return 3 if self.quick else 8

    @property
    def prefix_max_tokens(self) -> int:
        # Only the time to first token matters there; a few tokens keep the scenario short.
        return 8

    @property
    def profile_requests(self) -> int:
        """Measured requests per power profile (after a warm-up); parked admits 6 a minute, so at most 5."""
        return 3 if self.quick else 5

    @property
    def profile_tokens(self) -> int:
        # eco and parked pace decoding to a few tokens a second: keep their requests short.
        return 16 if self.quick else 32

    @property
    def seal_number(self) -> int:
        """Calls per timed batch of the seal-cost micro-benchmark (timeit's `number`)."""
        return 50 if self.quick else 200

    @property
    def seal_repeat(self) -> int:
        return 3 if self.quick else 7

    @property
    def llama_bench_repetitions(self) -> int:
        return 2 if self.quick else 5

    @property
    def plots_dir(self) -> Path:
        return self.out.parent / self.out.stem   # docs/benchmarks.md -> docs/benchmarks/
