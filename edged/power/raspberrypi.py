"""Raspberry Pi firmware sensors via ``vcgencmd``: Pi 5 PMIC rails and throttling bits, cached."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence

import structlog

from edged.errors import SensorError
from edged.power.readings import PowerSample, ThrottleState, checked_watts

logger = structlog.get_logger(__name__)

CommandRunner = Callable[[Sequence[str]], str]
"""Runs a command and returns its stdout; raises ``SensorError`` on any failure."""

PMIC_COMMAND = ("vcgencmd", "pmic_read_adc")
THROTTLED_COMMAND = ("vcgencmd", "get_throttled")
MAX_OUTPUT_BYTES = 64 * 1024
COMMAND_TIMEOUT_S = 2.0
PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(?:current|volt)\(\d+\)=([0-9]+(?:\.[0-9]+)?)[AV]\s*$")
SUPPLY_RAIL = "EXT5V"
MAX_RAIL_VOLTS = 30.0
MAX_RAIL_AMPS = 50.0


def run_vcgencmd(args: Sequence[str]) -> str:
    """The real runner: a short subprocess with a timeout and a cap on what it may print."""
    try:
        done = subprocess.run(list(args), capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SensorError(f"{' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise SensorError(f"{' '.join(args)}: exit status {done.returncode}")
    if len(done.stdout) > MAX_OUTPUT_BYTES:
        raise SensorError(f"{' '.join(args)}: output larger than {MAX_OUTPUT_BYTES} bytes")
    return done.stdout.decode("utf-8", errors="replace")


def default_runner() -> CommandRunner | None:
    """``run_vcgencmd`` when ``vcgencmd`` is installed, else ``None``."""
    return run_vcgencmd if shutil.which("vcgencmd") else None


class CachedCommand:
    """Runs one command at most once per ``period_s``; a failure is cached too, so a broken
    ``vcgencmd`` cannot turn into a fork storm."""

    def __init__(self, runner: CommandRunner, args: Sequence[str], period_s: float) -> None:
        self.runner = runner
        self.args = tuple(args)
        self.period_s = period_s
        self._at: float | None = None
        self._output: str | None = None
        self._error: SensorError | None = None

    def output(self, now: float) -> str:
        if self._at is None or now - self._at >= self.period_s or now < self._at:
            self._at = now
            try:
                self._output, self._error = self.runner(self.args), None
            except SensorError as exc:
                self._output, self._error = None, exc
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output


def parse_pmic_adc(text: str) -> dict[str, dict[str, float]]:
    """``{"VDD_CORE": {"A": 2.338, "V": 0.85}, ...}`` from ``pmic_read_adc`` output."""
    rails: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = PMIC_LINE.match(line)
        if match is None:
            continue
        rail, unit, value = match.group(1), match.group(2), float(match.group(3))
        limit = MAX_RAIL_AMPS if unit == "A" else MAX_RAIL_VOLTS
        if value > limit:
            raise SensorError(f"pmic_read_adc: {rail}_{unit}={value} is implausible")
        rails.setdefault(rail, {})[unit] = value
    if not any(len(units) == 2 for units in rails.values()):
        raise SensorError("pmic_read_adc: no rail with both current and voltage in the output")
    return rails


class PmicReader:
    """Pi 5 PMIC: Σ V×A over the rails that report both. The 5 V input rail has no current, so USB
    devices and HATs are not included (scope ``pmic_rails``, not the board input)."""

    name = "rpi5_pmic"

    def __init__(self, runner: CommandRunner, period_s: float = 1.0) -> None:
        self.command = CachedCommand(runner, PMIC_COMMAND, period_s)

    def read(self, now: float) -> PowerSample:
        rails = parse_pmic_adc(self.command.output(now))
        watts = sum(units["A"] * units["V"] for units in rails.values() if len(units) == 2)
        supply = rails.get(SUPPLY_RAIL, {}).get("V")
        return PowerSample(self.name, "pmic_rails", checked_watts(watts, "pmic_read_adc"), supply_voltage_v=supply)


def parse_throttled(text: str) -> ThrottleState:
    match = re.fullmatch(r"\s*throttled=(0x[0-9a-fA-F]{1,8}|\d{1,10})\s*", text)
    if match is None:
        raise SensorError(f"get_throttled: unexpected output {text[:40]!r}")
    return ThrottleState.from_bits(int(match.group(1), 0))


class ThrottleReader:
    """``vcgencmd get_throttled`` bits, cached for the sampling period."""

    def __init__(self, runner: CommandRunner, period_s: float = 1.0) -> None:
        self.command = CachedCommand(runner, THROTTLED_COMMAND, period_s)

    def read(self, now: float) -> ThrottleState:
        return parse_throttled(self.command.output(now))
