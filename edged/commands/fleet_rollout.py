"""`edged fleet rollout start | status | pause | resume | abort`: a staged rollout in waves, after hawkBit."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edged.commands.mqtt_options import add_mqtt_arguments, mqtt_settings
from edged.errors import ConfigError

_FORMATTER = argparse.RawDescriptionHelpFormatter
EPILOG = """\
A rollout offers a signed release wave after wave, through the offers devices already follow:
  --wave GROUP           the group's retained offer topic: every member, also ones that join later
  --wave GROUP:PERCENT   the device topics of that share of the group's members, the same devices for
                         the same release on every run (sorted by sha256 of release id and device id);
                         percentages of one group add up (lab:10 then lab:50 = 10 %, then up to half)
It reads each device's retained update state: a wave is done when --success-threshold percent of its
devices run the release (`active`); the rollout aborts by itself, withdrawing its offers, when more than
--error-threshold percent of a wave failed (rejected, rolled_back, failed) or a wave is not done within
--wave-timeout. Offline and deferred devices count as pending until then. Devices announce their
[updates] groups in their retained status, which is how a group's members are known.

The state is kept in KEYS/rollouts/<fleet>-<channel>-<version>.json: stop `start` at any time (Ctrl-C,
SIGTERM, even kill -9) and run it again, or `resume`, and it carries on. One process runs a rollout.

examples:
  edged fleet rollout start keys/releases/stable-8.json --dir keys --mqtt mqtt://broker:1883 \\
      --wave canary --wave lab:50 --wave lab --success-threshold 90 --error-threshold 5 --wave-timeout 2h
  edged fleet rollout status --dir keys --watch
  edged fleet rollout pause --dir keys
  edged fleet rollout resume --dir keys --mqtt mqtt://broker:1883
  edged fleet rollout abort --dir keys --mqtt mqtt://broker:1883
"""


def register(fleet_sub: Any) -> None:
    from edged.commands import fleet_rollout_control as control

    rollout = fleet_sub.add_parser("rollout", help="staged rollout of a release: canary, waves, thresholds, abort",
                                   description="edged fleet rollout: offer a release in waves.", epilog=EPILOG,
                                   formatter_class=_FORMATTER)
    actions = rollout.add_subparsers(dest="rollout_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start (or carry on with) a rollout of MANIFEST", epilog=EPILOG,
                               formatter_class=_FORMATTER)
    add_mqtt_arguments(start)
    start.add_argument("manifest", type=Path, metavar="MANIFEST", help="signed manifest from `edged fleet release`")
    start.add_argument("--dir", type=Path, required=True, help="key directory; its signatures are checked and the "
                                                               "rollout state is kept in KEYS/rollouts/")
    start.add_argument("--wave", action="append", default=[], metavar="GROUP[:PERCENT]", required=True,
                       help="one wave, in order (repeat)")
    start.add_argument("--success-threshold", default="100", metavar="PCT",
                       help="percent of a wave's devices active before the next wave starts (default 100)")
    start.add_argument("--error-threshold", default="0", metavar="PCT",
                       help="abort when more than this percent of a wave failed (default 0: the first failure)")
    start.add_argument("--wave-timeout", default="1h", metavar="DURATION",
                       help="abort when a wave is not done within this (90s, 30m, 2h, 1d; default 1h)")
    start.set_defaults(func=cmd_rollout_start)
    for name, text in (("status", "where the rollout stands: waves, counts, devices not done"),
                       ("pause", "start no further wave (offers made stay); `resume` carries on"),
                       ("resume", "carry on with a paused or interrupted rollout"),
                       ("abort", "stop for good, withdraw its offers, say who committed and how to roll back")):
        action = actions.add_parser(name, help=text, description=f"edged fleet rollout {name}: {text}.",
                                    epilog=EPILOG, formatter_class=_FORMATTER)
        if name in ("resume", "abort"):
            add_mqtt_arguments(action)
        action.add_argument("rollout", nargs="?", metavar="ROLLOUT",
                            help="rollout id, e.g. default-stable-8 (default: the one that is running or paused)")
        action.add_argument("--dir", type=Path, required=True, help="key directory holding KEYS/rollouts/")
        if name == "status":
            action.add_argument("--watch", action="store_true", help="follow it live (Ctrl-C to stop)")
            action.add_argument("--json", action="store_true", help="JSON (with --watch: one line per change)")
        action.set_defaults(func={"status": cmd_rollout_status, "pause": control.cmd_rollout_pause,
                                  "resume": control.cmd_rollout_resume, "abort": control.cmd_rollout_abort}[name])


def cmd_rollout_start(args: argparse.Namespace) -> int:
    from edged.fleet.depot.operator import read_manifest
    from edged.fleet.depot.rollout_plan import parse_duration, parse_percent, parse_waves, release_id
    from edged.fleet.depot.rollout_state import RolloutLock, RolloutState, RolloutStore, WaveRecord, now_ms

    waves = parse_waves(args.wave)
    success = parse_percent(args.success_threshold, "--success-threshold")
    error = parse_percent(args.error_threshold, "--error-threshold")
    timeout = parse_duration(args.wave_timeout)
    settings = mqtt_settings(args)
    envelope, manifest = read_manifest(args.manifest, args.dir)
    rollout_id = release_id(manifest.fleet, manifest.channel, manifest.version)
    store = RolloutStore(args.dir)
    stop = stop_on_signals()
    lock = RolloutLock(store, rollout_id)
    if not lock.wait_free(1.0):
        raise lock.refusal(rollout_id)
    try:
        digest = hashlib.sha256(envelope).hexdigest()
        if store.exists(rollout_id):
            state = store.load(rollout_id)
            _check_same_rollout(state, digest, [(w.group, w.percent) for w in waves], success, error, timeout,
                                settings.topic_prefix)
            if state.phase == "paused":
                raise ConfigError(f"rollout {rollout_id} is paused ({state.reason}); carry on with "
                                  f"`edged fleet rollout resume {rollout_id} --dir {args.dir} --mqtt URL`")
            print(f"rollout {rollout_id}: carrying on from the recorded state", file=sys.stderr)
        else:
            state = store.save(RolloutState(
                id=rollout_id, fleet=manifest.fleet, channel=manifest.channel, version=manifest.version,
                manifest_sha256=digest, manifest_path=str(args.manifest.resolve()), topic_prefix=settings.topic_prefix,
                success_threshold=success, error_threshold=error, wave_timeout_s=timeout,
                waves=[WaveRecord(group=w.group, percent=w.percent) for w in waves],
                created_unix_ms=now_ms(), updated_unix_ms=now_ms()))
        return run_rollout(args, store, state, envelope, stop)
    finally:
        lock.release()


def _check_same_rollout(state: Any, digest: str, waves: list[tuple[str, int]], success: float, error: float,
                        timeout: float, prefix: str) -> None:
    if state.phase in ("finished", "aborted"):
        raise ConfigError(f"rollout {state.id} has {state.phase}" + (f" ({state.reason})" if state.reason else "")
                          + ": a release is rolled out once; sign a new, higher version to offer it again")
    if state.manifest_sha256 != digest:
        raise ConfigError(f"rollout {state.id} is recorded with another signed manifest of this version; "
                          "finish or abort it first")
    recorded = ([(w.group, w.percent) for w in state.waves], state.success_threshold, state.error_threshold,
                state.wave_timeout_s, state.topic_prefix)
    if recorded != (waves, success, error, timeout, prefix):
        raise ConfigError(f"rollout {state.id} is recorded with other waves, thresholds, timeout or topic prefix "
                          f"({' '.join('--wave ' + (g if p == 100 else f'{g}:{p}') for g, p in recorded[0])} "
                          f"--success-threshold {recorded[1]:g} --error-threshold {recorded[2]:g} --wave-timeout "
                          f"{recorded[3]:g}s); carry on with `edged fleet rollout resume {state.id}` or abort it")


def stop_on_signals() -> threading.Event:
    """SIGTERM and SIGINT end the rollout process cleanly (the record stays as it is, the lock is released).

    Installed before the lock is taken: a signal that came between taking it and the handler killed the
    process with the lock file still naming it, which the next `resume` had to wait out.
    """
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def run_rollout(args: argparse.Namespace, store: Any, state: Any, envelope: bytes, stop: threading.Event) -> int:
    from edged.commands.fleet_rollout_view import abort_report, progress_line
    from edged.fleet.depot.rollout_roster import FleetRoster
    from edged.fleet.depot.rollout_runner import Rollout
    from edged.fleet.depot.rollout_session import BrokerView, drive

    settings = mqtt_settings(args)
    if (stale := store.take_request(state.id)) is not None:  # nobody ran the rollout to read it: it is not for us
        print(f"ignoring a {stale.action} request by {stale.by} that no running process took", file=sys.stderr)
    roster = FleetRoster(settings.topic_prefix)
    view = BrokerView(settings, roster, f"edged-rollout-{int(time.time() * 1000) % 10**9}")
    view.open()
    rollout = Rollout(store, state, envelope, roster, view.publish)
    last = [""]

    def show(current: Any) -> None:
        line = progress_line(current)
        if line != last[0]:
            print(line, flush=True)
            last[0] = line

    try:
        final = drive(rollout, view, stop, lambda: _request(store, state.id), show)
    finally:
        view.close()
    if final.phase == "aborted":
        print(abort_report(final, args.dir))
        return 1
    if final.phase == "running":
        print(f"stopped; the rollout is recorded: carry on with `edged fleet rollout resume {final.id} --dir "
              f"{args.dir} --mqtt URL` (or the same start command)", file=sys.stderr)
        return 130
    if final.phase == "paused":
        print(f"paused: carry on with `edged fleet rollout resume {final.id} --dir {args.dir} --mqtt URL`")
    return 0


def _request(store: Any, rollout_id: str) -> tuple[str, str] | None:
    request = store.take_request(rollout_id)
    return None if request is None else (request.action, request.by)


def pick_rollout(store: Any, wanted: str | None) -> str:
    if wanted:
        return str(wanted)
    live = [i for i in store.ids() if store.load(i).phase in ("running", "paused")]
    if len(live) == 1:
        return str(live[0])
    known = ", ".join(store.ids()) or "none"
    raise ConfigError(("several rollouts are running or paused" if live else "no rollout is running or paused")
                      + f"; name one (known: {known})")


def cmd_rollout_status(args: argparse.Namespace) -> int:
    from edged.commands.fleet_rollout_view import render_status, status_json
    from edged.fleet.depot.rollout_state import RolloutLock, RolloutStore

    store = RolloutStore(args.dir)
    rollout_id = pick_rollout(store, args.rollout)
    lock = RolloutLock(store, rollout_id)
    shown = None
    tty = sys.stdout.isatty() and not args.json
    try:
        while True:
            state = store.load(rollout_id)
            holder = lock.holder() if lock.held_elsewhere() else None
            text = (json.dumps(status_json(state, holder), indent=None if args.watch else 1) if args.json
                    else render_status(state, holder, args.dir))
            if text != shown:
                sys.stdout.write(("\x1b[H\x1b[2J" if tty and args.watch else "") + text + "\n")
                sys.stdout.flush()
                shown = text
            if not args.watch or state.phase in ("finished", "aborted"):
                return 0
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
