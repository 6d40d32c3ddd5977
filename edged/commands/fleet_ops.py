"""`edged fleet depot | push | status`: serve release chunks, offer a release, follow a rollout."""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Final

from edged.commands.mqtt_options import add_mqtt_arguments, mqtt_settings
from edged.errors import ConfigError

STATES: Final = ("idle", "verifying", "downloading", "paused", "deferred", "installing", "active", "rejected",
                 "rolled_back", "failed")
SETTLE_S: Final = 0.5  # --once: retained messages arrive right after subscribing; this much quiet means all came
_FORMATTER = argparse.RawDescriptionHelpFormatter

DEPOT_EPILOG = """\
Serves the chunks of every release signed in KEYS/releases/ whose model files are in --models (found
by SHA-256, the artifact name is tried first: copy an ONNX directory in as it is, so that
--models/<directory>/<file> holds each file of the release). Devices pull: they publish requests on
<prefix>/<device>/update/pull and the depot answers on <prefix>/<device>/update/chunks. Requests come
through the MQTT shared subscription $share/<group>/<prefix>/+/update/pull, so start several depots
with the same --share-group (on one or more machines) and the broker splits the load between them.
Only the release keys' public half is used (KEYS/root.json): the depot needs no private key.

examples:
  edged fleet depot --mqtt mqtt://broker.local:1883 --dir ./keys --models ./models
  edged fleet depot --mqtt mqtts://broker:8883 --ca-file ca.pem --username depot \\
      --password-file depot.pw --dir ./keys --models /srv/models --workers 4
"""
PUSH_EPILOG = """\
Publishes a signed release manifest (from `edged fleet release`) where devices listen for offers,
retained, so devices that are offline now get it when they connect:
  --device ID   <prefix>/ID/update/offer                     one device
  --group G     <prefix>/fleet/<fleet>/group/G/offer          devices with G in [updates] groups
  --channel C   <prefix>/fleet/<fleet>/channel/C/offer        devices with C in [updates] channels
Each device checks the signatures, its fleet, the targets and the version itself.

examples:
  edged fleet push --mqtt mqtt://broker.local:1883 --channel stable keys/releases/stable-7.json
  edged fleet push --mqtt mqtt://broker.local:1883 --device pi-kitchen-1 --dir ./keys beta-3.json
"""
STATUS_EPILOG = """\
Reads the retained <prefix>/+/update/state and <prefix>/+/status topics: each device's update state
(idle, downloading (pct), paused, verifying, deferred (reason: downloaded, waiting for its install
window or policy), installing, active, rejected (reason), rolled_back (reason), failed (reason)),
the release it concerns and the model it serves.

examples:
  edged fleet status --mqtt mqtt://broker.local:1883 --once
  edged fleet status --mqtt mqtt://broker.local:1883 --json --timeout 60 > rollout.jsonl
  edged fleet status --mqtt mqtt://broker.local:1883 --device pi-1 --device pi-2 --until active \\
      --version 7 --timeout 900
  edged fleet status --mqtt mqtt://broker.local:1883 --until deferred,active --version 7 --timeout 3600
"""


def register(fleet_sub: Any) -> None:
    depot = fleet_sub.add_parser("depot", help="serve released model chunks to devices over MQTT",
                                 description="edged fleet depot: serve released model chunks over MQTT.",
                                 epilog=DEPOT_EPILOG, formatter_class=_FORMATTER)
    add_mqtt_arguments(depot)
    depot.add_argument("--dir", type=Path, required=True, help="key directory (KEYS/root.json, KEYS/releases/)")
    depot.add_argument("--models", type=Path, required=True,
                       help="directory with the released GGUF files and ONNX directories")
    depot.add_argument("--share-group", default="depot", help="shared-subscription group (default depot); "
                                                              "'' = a plain subscription (a single depot)")
    depot.add_argument("--workers", type=int, default=2, help="threads reading and publishing chunks (default 2)")
    depot.add_argument("--client-id", help="MQTT client id (default: edged-depot-<random>)")
    depot.add_argument("--stats-every", type=float, default=30.0, help="log counters every N seconds (default 30)")
    depot.add_argument("--log-level", choices=["debug", "info", "warning"], default="info")
    depot.set_defaults(func=cmd_depot)

    push = fleet_sub.add_parser("push", help="offer a signed release manifest to a device, group or channel",
                                description="edged fleet push: publish a signed release manifest.",
                                epilog=PUSH_EPILOG, formatter_class=_FORMATTER)
    add_mqtt_arguments(push)
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="offer to one device; warns when its retained status says "
                        "updates are off there or its clock blocks them")
    target.add_argument("--group", metavar="G", help="offer to a device group")
    target.add_argument("--channel", metavar="C", help="offer on a channel (must be the manifest's channel)")
    push.add_argument("--dir", type=Path, help="check the signatures against this key directory first")
    push.add_argument("--no-retain", action="store_true", help="do not keep the offer on the broker")
    push.add_argument("manifest", type=Path, metavar="MANIFEST", help="signed manifest from `edged fleet release`")
    push.set_defaults(func=cmd_push)

    status = fleet_sub.add_parser("status", help="per-device update state and progress, live",
                                  description="edged fleet status: follow a rollout.",
                                  epilog=STATUS_EPILOG, formatter_class=_FORMATTER)
    add_mqtt_arguments(status)
    status.add_argument("--device", action="append", default=[], metavar="ID", help="only this device (repeatable)")
    status.add_argument("--json", action="store_true", help="JSON: one line per change (live) or one object")
    status.add_argument("--once", action="store_true", help="print the retained states once and exit")
    status.add_argument("--timeout", type=float, help="exit after this many seconds (with --until: exit 1)")
    status.add_argument("--until", metavar="STATE[,STATE]", help="exit 0 once every device (or each --device) "
                                                                 f"is in one of these states: {', '.join(STATES)}")
    status.add_argument("--version", type=int, help="with --until: the state must be about this release version "
                                                    "(a device still active on the previous one does not count)")
    status.set_defaults(func=cmd_status)


def cmd_depot(args: argparse.Namespace) -> int:
    from edged.fleet.depot.catalog import ReleaseCatalog
    from edged.fleet.depot.depot import Depot
    from edged.testing.depot_faults import FaultInjector, plan_from_env
    from edged.log import configure_logging

    configure_logging(level=args.log_level, fmt="auto", stream=sys.stderr)
    if not 1 <= args.workers <= 64:
        raise ConfigError("--workers: choose 1 to 64")
    settings = mqtt_settings(args)
    catalog = ReleaseCatalog(args.dir, args.models)
    for manifest in catalog.manifests():
        names = ", ".join(a.name for a in manifest.artifacts)
        print(f"release {manifest.channel} v{manifest.version}: {names}", file=sys.stderr)
    plan = plan_from_env(os.environ)
    depot = Depot(settings, catalog, share_group=args.share_group or None, workers=args.workers,
                  client_id=args.client_id, faults=FaultInjector(plan) if plan else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    depot.start()
    announced = False
    next_stats = time.monotonic() + args.stats_every
    try:
        while not stop.wait(0.1):
            if not announced and depot.link.is_connected:
                announced = True
                print(f"depot ready on {settings.broker_url().redacted()}", file=sys.stderr, flush=True)
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + args.stats_every
                print(json.dumps({"depot": depot.snapshot()}), file=sys.stderr, flush=True)
    finally:
        depot.stop()
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from edged.fleet.depot.operator import offer_topic, push, read_manifest

    settings = mqtt_settings(args)
    envelope, manifest = read_manifest(args.manifest, args.dir)
    topic = offer_topic(settings.topic_prefix, manifest, device=args.device, group=args.group, channel=args.channel)
    push(settings, topic, envelope, retain=not args.no_retain)
    print(f"offered {manifest.fleet}/{manifest.channel} v{manifest.version} on {topic}")
    if args.device:
        from edged.fleet.depot.readiness import push_warnings, retained_status

        for warning in push_warnings(args.device, retained_status(settings, args.device), retained=not args.no_retain):
            print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from edged.fleet.depot.operator import UpdateBoard, subscribe_board

    wanted = _parse_states(args.until)
    settings = mqtt_settings(args)
    board = UpdateBoard(settings.topic_prefix, set(args.device))
    link, inbox = subscribe_board(settings, board, f"edged-status-{int(time.time() * 1000) % 10**9}")
    timeout = args.timeout if args.timeout is not None else (5.0 if args.once else None)
    end = None if timeout is None else time.monotonic() + timeout
    live = not args.once
    tty = sys.stdout.isatty() and not args.json
    last_message = time.monotonic()
    reached = False
    try:
        while end is None or time.monotonic() < end:
            try:
                message = inbox.get(timeout=0.1)
            except queue.Empty:
                if args.once and link.is_connected and time.monotonic() - last_message > SETTLE_S:
                    break
                continue
            last_message = time.monotonic()
            entry = board.apply(message)
            if entry is not None and live:
                _show(board, entry, args.json, tty)
            if wanted and board.all_in(wanted, args.version):
                reached = True
                break
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    if not live:
        print(json.dumps([board.devices[d].as_json() for d in sorted(board.devices)]) if args.json
              else board.render())
    return 1 if wanted and not reached else 0


def _show(board: Any, entry: Any, as_json: bool, tty: bool) -> None:
    """One change: a JSON line, a redrawn table on a terminal, or one plain line in a pipe or log."""
    if as_json:
        print(json.dumps(entry.as_json()), flush=True)
    elif tty:
        sys.stdout.write("\x1b[H\x1b[2J" + board.render() + "\n")
        sys.stdout.flush()
    else:
        print("  ".join(cell for cell in entry.row() if cell), flush=True)


def _parse_states(text: str | None) -> set[str]:
    if not text:
        return set()
    states = {part.strip() for part in text.split(",") if part.strip()}
    if unknown := states - set(STATES):
        raise ConfigError(f"--until: unknown state(s) {', '.join(sorted(unknown))}; known: {', '.join(STATES)}")
    return states
