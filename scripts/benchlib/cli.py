"""`scripts/bench`: parse the command line, run every target through every scenario, write the report."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchlib import procs
from benchlib.build import BuildError, ensure_built
from benchlib.compare import derive
from benchlib.llama_bench import run_llama_bench
from benchlib.load_monitor import START_LOADAVG_LIMIT, LoadMonitor, load_average_1min
from benchlib.machine import machine_info, software_versions
from benchlib.model_update import measure_model_update
from benchlib.plots import draw_all, matplotlib_missing
from benchlib.portable_native import measure_portable_vs_native
from benchlib.prompts import CHAT_PROMPTS
from benchlib.report import failures, print_summary, write_markdown
from benchlib.scenarios import SCENARIOS
from benchlib.settings import DEFAULT_OUT, EDGED_PROFILE, RESULTS_DIR, RUN_DIR, BenchSettings
from benchlib.targets import TARGETS, Target, TargetContext
from benchlib.targets.edged_socket import profile_engine_shape

LLAMA_BENCH = "llama-bench"   # not a Target (no server to ask), but selectable like one


def log(message: str) -> None:
    print(message, flush=True)


def _names(value: str, known: list[str], what: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown)}; have: {', '.join(known)}")
    return names


def parse_args(argv: list[str]) -> BenchSettings:
    all_targets = [LLAMA_BENCH, *TARGETS]
    parser = argparse.ArgumentParser(
        prog="scripts/bench", description="Benchmark edged (over its socket and over MQTT, sealed; per power "
        "profile; the cost of sealing) against llama-bench, llama-server and raw llama-cpp-python on the demo "
        "model, and write docs/benchmarks.md.",
        epilog="examples:\n  scripts/bench --quick              check the tool (a few minutes once built)\n"
               "  scripts/bench                      the full run, on an idle machine\n"
               "  scripts/bench --skip-build         edged and llama-cpp-python only (no llama.cpp build)\n"
               "  scripts/bench --targets edged,edged-engine --scenarios chat\n"
               "  scripts/bench --quick --skip-build --targets edged-mqtt,edged-profiles,seal-cost",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 repetition per prompt, 5 s idle window")
    parser.add_argument("--threads", type=int, default=2, help="threads for every target (default 2)")
    parser.add_argument("--tokens", type=int, default=96, help="tokens generated per request (default 96)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (default docs/benchmarks.md)")
    parser.add_argument("--skip-build", action="store_true", help="skip the llama.cpp baselines and their build")
    parser.add_argument("--targets", default=",".join(all_targets),
                        help=f"comma-separated subset of: {', '.join(all_targets)}")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.tokens < 2:
        parser.error("--threads must be at least 1 and --tokens at least 2")
    try:
        targets = _names(args.targets, all_targets, "target")
        scenarios = _names(args.scenarios, list(SCENARIOS), "scenario")
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    out = args.out if args.out.is_absolute() else Path.cwd() / args.out
    return BenchSettings(threads=args.threads, tokens=args.tokens, quick=args.quick, out=out.resolve(),
                         skip_build=args.skip_build, targets=targets, scenarios=scenarios)


def run_target(target: Target, settings: BenchSettings) -> dict[str, Any]:
    """Start the target, run each applicable scenario, read its peak memory, and always stop it."""
    entry: dict[str, Any] = {"label": target.label, "capabilities": sorted(target.capabilities), "scenarios": {}}
    log(f"\n== {target.label} ==")
    try:
        startup = target.start()
        entry["startup"] = asdict(startup)
        log(f"    ready in {startup.ready_s:.2f} s")
        for name in settings.scenarios:
            scenario = SCENARIOS[name]
            if not scenario.applies_to(target):
                continue
            log(f"  -- {name}")
            try:
                entry["scenarios"][name] = scenario.run(target, settings, log)
            except Exception as exc:  # noqa: BLE001  (one failed scenario must not lose the others)
                entry["scenarios"][name] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"    FAILED: {exc}")
        if target.pid is not None:
            entry["peak_rss_bytes"] = procs.peak_rss_bytes(target.pid)
    except Exception as exc:  # noqa: BLE001
        entry["error"] = f"{type(exc).__name__}: {exc}"
        log(f"    FAILED: {exc}")
    finally:
        entry["stop"] = target.stop()
        entry["describe"] = target.describe()
    return entry


def run(settings: BenchSettings, command: str) -> int:
    start_loadavg = load_average_1min()   # before our own set-up adds load
    if start_loadavg > START_LOADAVG_LIMIT:
        log(f"WARNING: the machine is not idle (1-min load average {start_loadavg:.2f} > {START_LOADAVG_LIMIT}); "
            "numbers will be noisy")
    from edged.paths import demo_model_path  # noqa: PLC0415

    model = demo_model_path()
    engine = profile_engine_shape(EDGED_PROFILE, settings.threads)
    if settings.threads > (os.cpu_count() or 1):
        log(f"WARNING: --threads {settings.threads} exceeds the {os.cpu_count()} CPUs; edged clamps to the CPU count, "
            "the llama.cpp tools do not")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RUN_DIR / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "settings": {
            **asdict(settings), "out": str(settings.out), "repetitions": settings.repetitions,
            "idle_window_s": settings.idle_window_s, "prefix_requests": settings.prefix_requests,
            "profile_requests": settings.profile_requests, "profile_tokens": settings.profile_tokens,
            "seal_number": settings.seal_number, "seal_repeat": settings.seal_repeat},
        "machine": machine_info(), "engine": asdict(engine), "model_path": str(model),
        "prompt_count": len(CHAT_PROMPTS), "targets": {}, "skipped": {}, "llama_cpp_build": None,
        "llama_bench": None, "model_update": None}

    build = None
    wants_build = LLAMA_BENCH in settings.targets or any(
        TARGETS[n].needs_llama_cpp_build for n in settings.targets if n in TARGETS)
    if wants_build and not settings.skip_build:
        try:
            build = ensure_built(log)
            results["llama_cpp_build"] = asdict(build)
        except BuildError as exc:
            log(f"\nbench: {exc}")
            return 2
    results["versions"] = software_versions(build.llama_cpp_commit if build else "not built (--skip-build)")

    monitor = LoadMonitor()
    monitor.start(start_loadavg)
    try:
        if build and LLAMA_BENCH in settings.targets:
            log("\n== llama-bench ==")
            try:
                results["llama_bench"] = run_llama_bench(build.binary("llama-bench"), model, engine, settings.tokens,
                                                         settings.llama_bench_repetitions, run_dir / "llama-bench.log")
                for test in results["llama_bench"]["tests"].values():
                    log(f"    {test['test']}: {test['tokens_per_s']['median']:.1f} tok/s (median)")
            except RuntimeError as exc:
                results["llama_bench"] = {"error": str(exc)}
                log(f"    FAILED: {exc}")
        if build and LLAMA_BENCH in settings.targets:
            log("\n== portable vs native engine build ==")
            try:
                results["portable_vs_native"] = measure_portable_vs_native(
                    model, engine, settings.tokens, rounds=1 if settings.quick else 3, log=log)
                for key, value in results["portable_vs_native"]["ratios"].items():
                    log(f"    {key}: portable/native = {value:.3f}")
            except (BuildError, RuntimeError, OSError, subprocess.SubprocessError) as exc:
                results["portable_vs_native"] = {"error": str(exc)}
                log(f"    FAILED: {exc}")
        context = TargetContext(settings=settings, model_path=model, engine=engine,
                                llama_cpp_bin=Path(build.bin_dir) if build else None, run_dir=run_dir)
        for name in settings.targets:
            if name == LLAMA_BENCH:
                continue
            target_class = TARGETS[name]
            if target_class.needs_llama_cpp_build and build is None:
                log(f"\n== {target_class.label}: skipped (--skip-build) ==")
                continue
            if reason := target_class.unavailable():
                log(f"\n== {target_class.label}: skipped ({reason}) ==")
                results["skipped"][name] = {"label": target_class.label, "reason": reason}
                continue
            results["targets"][name] = run_target(target_class(context), settings)
        results["model_update"] = measure_model_update(run_dir, log)
    finally:
        results["load"] = {**asdict(load := monitor.stop()), "idle": load.idle}

    results["comparisons"] = derive(results)
    plots: list[Path] = []
    if missing := matplotlib_missing():
        log(f"note: {missing}")
        results["plots_note"] = missing
    else:
        plots = draw_all(results, settings.plots_dir)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    raw = RESULTS_DIR / f"{stamp}.json"
    raw.write_text(json.dumps(results, indent=2, default=str))
    write_markdown(results, settings.out, plots)
    print_summary(results)
    log(f"\nreport: {settings.out}\nplots: {', '.join(str(p) for p in plots) or 'none'}\nraw results: {raw}")
    return 1 if failures(results) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = parse_args(argv)
    procs.install_cleanup()
    from edged.log import configure_logging

    # edged code running inside the bench (engine, transfer, clients) logs warnings only, on stderr.
    configure_logging(level="warning", fmt="console", stream=sys.stderr)
    command = shlex.join(["scripts/bench", *argv])
    try:
        return run(settings, command)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping children", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
