"""`scripts/fleet-sim`: a staged rollout over simulated devices against one mosquitto, measured.

Starts a broker ($SYS every second), the real depot, the fleet simulator (edged.testing.fleet_sim, one
process) and the real `edged fleet rollout start` in three waves; measures the rollout process's peak RSS,
CPU seconds and wall time (wait4 rusage) and the broker's message counters over the rollout, and writes the
"Fleet rollout at scale" section of docs/benchmarks.md (above the generated part, which scripts/bench owns).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from benchlib import procs
from benchlib.mosquitto import Broker
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import Artifact, ReleaseManifest
from edged.fleet.trust import utc_now

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Fleet rollout at scale"
MARKER = "<!-- scripts/bench: everything below this line is generated; edit the method section above it -->"
COUNTERS = ("$SYS/broker/messages/received", "$SYS/broker/messages/sent", "$SYS/broker/publish/messages/received",
            "$SYS/broker/publish/messages/sent", "$SYS/broker/bytes/received", "$SYS/broker/bytes/sent")


class CountingBroker(Broker):
    def _write_config(self) -> None:
        super()._write_config()
        with self.config_path.open("a") as conf:
            conf.write("sys_interval 1\n")


class SysCounters:
    """The broker's own $SYS counters, as they are published every second."""

    def __init__(self, port: int) -> None:
        self.values: dict[str, int] = {}
        self.updated = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="fleet-sim-sys")
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe([(topic, 0) for topic in COUNTERS])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _message(self, _client: Any, _userdata: Any, message: Any) -> None:
        try:
            self.values[message.topic] = int(message.payload)
            self.updated.set()
        except ValueError:
            pass

    def snapshot(self) -> dict[str, int]:
        """Values after the next $SYS publication."""
        self.updated.clear()
        self.updated.wait(5)
        time.sleep(1.2)  # every counter of that round has arrived
        return dict(self.values)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def release(keys: OperatorKeys, models: Path, size: int) -> Path:
    data = os.urandom(size)
    (models / "sim-model.gguf").write_bytes(data)
    keys.sign_release(ReleaseManifest(
        fleet="default", channel="sim", version=1, expires=utc_now() + timedelta(days=1), chunk_size=16 * 1024,
        artifacts=[Artifact(name="sim-model.gguf", size=size, sha256=hashlib.sha256(data).hexdigest(),
                            format="gguf")]))
    return keys.directory / "releases" / "sim-1.json"


def run(devices: int, waves: list[tuple[str, int]], size: int, workdir: Path) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    broker = CountingBroker(workdir / "broker").start()
    keys = OperatorKeys.create(workdir / "keys", root_keys=1, root_threshold=1, release_keys=1, release_threshold=1,
                               expires=utc_now() + timedelta(days=2))
    models = workdir / "models"
    models.mkdir()
    manifest = release(keys, models, size)
    python = sys.executable
    depot_log, sim_log = workdir / "depot.log", workdir / "fleet-sim.log"
    with depot_log.open("wb") as out:
        depot = procs.spawn([python, "-m", "edged", "fleet", "depot", "--mqtt", broker.url, "--dir",
                             str(keys.directory), "--models", str(models)], stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO)
    procs.wait_until(lambda: b"depot ready" in depot_log.read_bytes(), depot, 60, "depot", depot_log, 0.05)
    group_args = [arg for name, count in waves for arg in ("--group", f"{name}:{count}")]
    with sim_log.open("wb") as out:
        sim = procs.spawn([python, "-m", "edged.testing.fleet_sim", "--mqtt", broker.url, "--root",
                           str(keys.root_path), "--devices", str(devices), *group_args], stdout=out,
                          stderr=subprocess.STDOUT, cwd=REPO)
    procs.wait_until(lambda: b"fleet-sim ready" in sim_log.read_bytes(), sim, 120, "fleet simulator", sim_log, 0.05)
    counters = SysCounters(broker.port)
    time.sleep(2.0)  # the simulated devices' births are in before the count starts
    before = counters.snapshot()
    load_before = os.getloadavg()
    command = [python, "-m", "edged", "fleet", "rollout", "start", str(manifest), "--dir", str(keys.directory),
               "--mqtt", broker.url, *(arg for name, _ in waves for arg in ("--wave", name)), "--wave-timeout", "10m"]
    started = time.monotonic()
    with (workdir / "rollout.log").open("wb") as out:
        rollout = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(rollout.pid, 0)
    wall = time.monotonic() - started
    load_after = os.getloadavg()
    after = counters.snapshot()
    counters.stop()
    for proc in (sim, depot):
        procs.stop(proc)
    broker.stop()
    state = json.loads((keys.directory / "rollouts" / "default-sim-1.json").read_text())
    sim_counts = _last_json(sim_log, "fleet_sim")
    depot_counts = _last_json(depot_log, "requests")
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "devices": devices,
        "waves": [{"wave": w["group"], "devices": len(w["devices"]),
                   "active": sum(1 for d in w["devices"].values() if d["outcome"] == "succeeded")}
                  for w in state["waves"]],
        "phase": state["phase"], "exit_code": os.waitstatus_to_exitcode(status), "artifact_bytes": size,
        "wall_s": round(wall, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "broker": {topic.removeprefix("$SYS/broker/"): after.get(topic, 0) - before.get(topic, 0) for topic in COUNTERS},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in load_after],
        "simulator": sim_counts, "depot": depot_counts, "cpus": os.cpu_count(),
        "workdir": str(workdir.relative_to(REPO) if workdir.is_relative_to(REPO) else workdir),
    }


def _last_json(log: Path, key: str) -> dict[str, Any]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and key in data:
            return data.get("fleet_sim", data) if key == "fleet_sim" else data
    return {}


def section(result: dict[str, Any]) -> str:
    broker, sim, depot = result["broker"], result["simulator"], result["depot"]
    waves = ", ".join(f"{w['wave']} ({w['devices']})" for w in result["waves"])
    return "\n".join([
        SECTION, "",
        f"Measured by `scripts/fleet-sim` on {result['date']}: {result['devices']} simulated devices "
        "(`edged.testing.fleet_sim`: the device side of the update and presence protocol, no model, 50 devices "
        "per MQTT connection, in one process), one local mosquitto 2.0, the real depot, and the real "
        f"`edged fleet rollout start` in {len(result['waves'])} waves: {waves}. Each device pulls a "
        f"{result['artifact_bytes'] // 1024} KiB artifact in 16 KiB chunks from the depot and checks its SHA-256. "
        "The broker, depot and simulator ran on the same machine as the rollout command.", "",
        "| measure | value |", "|---|---|",
        f"| rollout result | {result['phase']} (exit {result['exit_code']}) |",
        f"| wall time of `rollout start` (connect, read retained state, 3 waves) | {result['wall_s']} s |",
        f"| CPU time of `rollout start` (user + system) | {result['cpu_s']} s |",
        f"| peak RSS of `rollout start` | {result['peak_rss_mib']} MiB |",
        f"| broker messages received / sent during the rollout | {broker['messages/received']} / "
        f"{broker['messages/sent']} |",
        f"| of which PUBLISH received / sent | {broker['publish/messages/received']} / "
        f"{broker['publish/messages/sent']} |",
        f"| broker bytes received / sent | {broker['bytes/received']} / {broker['bytes/sent']} |",
        f"| simulator: offers taken, pull requests, chunks, active | {sim.get('offers')}, {sim.get('pulls')}, "
        f"{sim.get('chunks')}, {sim.get('active')} |",
        f"| depot: requests, chunks, bytes | {depot.get('requests')}, {depot.get('chunks')}, {depot.get('bytes')} |",
        "",
        "`messages/*` counts every MQTT packet (PUBLISH, PUBACK, ...), `publish/messages/*` the PUBLISH packets, "
        "as mosquitto reports them in `$SYS` (every second here). The clients' own counts are in the last two "
        "rows: each device sends one pull request and three state reports (downloading, installing, active), "
        "plus the depot's chunks. mosquitto 2.0.11's `publish/messages/received` equals the pull requests plus the "
        "chunks in this run, so the retained messages (state reports, statuses, offers, the rollout summary) are "
        "evidently not counted there; they are in `messages/*` and the byte counts.", "",
        f"Machine: {result['cpus']} CPUs shared with three other engineers' work; load average (1, 5, 15 min) "
        f"{result['load_before']} before and {result['load_after']} after; all processes ran under `nice -n 10`. "
        "The wall time is mostly the devices' and the depot's work and the waves waiting for each other, not the "
        "rollout command's: its CPU time is the cost of following the fleet. Files of the run: "
        f"`{result['workdir']}/`.", ""])


def write_section(text: str, out: Path) -> None:
    existing = out.read_text()
    head, marker, tail = existing.partition(MARKER)
    if SECTION in head:
        before, _, rest = head.partition(SECTION)
        following = rest.find("\n## ")
        head = before + text + ("\n" + rest[following + 1:] if following >= 0 else "\n")
    else:
        head = head.rstrip() + "\n\n" + text + "\n"
    out.write_text(head + marker + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/fleet-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=500)
    parser.add_argument("--wave", action="append", default=[], metavar="GROUP:COUNT",
                        help="a wave and how many devices its group has (default canary:10 lab:90 field:400)")
    parser.add_argument("--artifact-bytes", type=int, default=64 * 1024)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write docs")
    args = parser.parse_args(argv)
    waves = [(n, int(c)) for n, _, c in (w.partition(":") for w in args.wave)] or [
        ("canary", args.devices // 50), ("lab", args.devices * 9 // 50),
        ("field", args.devices - args.devices // 50 - args.devices * 9 // 50)]
    procs.install_cleanup()
    workdir = REPO / "bench-work" / "fleet-sim" / time.strftime("%Y%m%d-%H%M%S")
    result = run(args.devices, waves, args.artifact_bytes, workdir)
    (workdir / "result.json").write_text(json.dumps(result, indent=1))
    text = section(result)
    print(text)
    if not args.no_write and result["phase"] == "finished":
        write_section(text, args.out)
        print(f"wrote the section to {args.out}", file=sys.stderr)
    return 0 if result["phase"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
