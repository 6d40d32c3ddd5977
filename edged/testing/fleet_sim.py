"""A light fleet for tests and benchmarks: many simulated devices speaking the device side of the update and
presence protocol (no model, no daemon), a few MQTT connections for all of them.

Each device publishes a retained status (online, with its fleet and groups) and update state, follows its
device offer topic and its groups' offer topics, checks an offer's signatures against the trust root like
a device does (and ignores a version it has seen), pulls every chunk from the real depot, checks the
whole file against the signed SHA-256, and reports downloading, installing and then active, or
rolled_back (load) when it is told to fail. Nothing is written to disk.

    python -m edged.testing.fleet_sim --mqtt mqtt://127.0.0.1:1883 --root KEYS/root.json \\
        --devices 500 --group canary:5 --group lab:45 --group field:450 --fail field-7
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from edged.errors import UpdateError
from edged.fleet import dsse
from edged.fleet.manifest import RELEASE_PAYLOAD_TYPE, ReleaseManifest, parse_manifest
from edged.fleet.messages import (
    MAX_PULL_CHUNKS,
    ActiveModel,
    PullRequest,
    ReleaseRef,
    UpdatePhase as Phase,
    UpdateStateReport,
    parse_chunk,
)
from edged.fleet.trust import TrustRoot, read_self_signed_root
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings
from edged.topics import DeviceTopics, group_offer_topic

DEVICES_PER_LINK: Final = 50
RETRY_AFTER_S: Final = 3.0
Handler = Callable[[InboundMessage], None]


@dataclass
class SimDevice:
    device_id: str
    groups: list[str]
    fail: bool = False
    stall: bool = False  # takes the offer, then never asks for a chunk (a device stuck mid-download)
    seen: dict[str, int] = field(default_factory=dict)  # channel -> highest version accepted
    release: ReleaseManifest | None = None
    chunks: dict[str, dict[int, bytes]] = field(default_factory=dict)
    asked_at: float = 0.0
    active: ActiveModel = field(default_factory=lambda: ActiveModel(model="sim.gguf"))


class SimulatedFleet:
    def __init__(self, settings: MqttSettings, root: TrustRoot, devices: list[SimDevice], fleet: str = "default",
                 devices_per_link: int = DEVICES_PER_LINK) -> None:
        self.settings = settings
        self.root = root
        self.fleet = fleet
        self.devices = {d.device_id: d for d in devices}
        self.links: list[MqttLink] = []
        self._link_of: dict[str, MqttLink] = {}
        self._lock = threading.Lock()
        self.counters = {"offers": 0, "refused": 0, "pulls": 0, "chunks": 0, "active": 0, "rolled_back": 0}
        for start in range(0, len(devices), devices_per_link):
            self._add_link(devices[start:start + devices_per_link], start // devices_per_link)
        self._stop = threading.Event()
        self._retry = threading.Thread(target=self._retry_forever, name="fleet-sim-retry", daemon=True)

    def _add_link(self, devices: list[SimDevice], index: int) -> None:
        link = MqttLink(self.settings, client_id=f"fleet-sim-{index}-{int(time.time()) % 10**6}",
                        on_connect=lambda _event: self._birth(devices, link))
        prefix = self.settings.topic_prefix
        groups = sorted({g for d in devices for g in d.groups})
        for group in groups:
            link.subscribe(group_offer_topic(prefix, self.fleet, group), 1, self._group_offer(group, devices))
        for device in devices:
            topics = DeviceTopics(prefix, device.device_id)
            link.subscribe(topics.update_offer, 1, self._device_offer(device))
            link.subscribe(topics.update_chunks, 1, self._chunk(device))
            self._link_of[device.device_id] = link
        self.links.append(link)

    def start(self) -> None:
        for link in self.links:
            link.start()
        self._retry.start()

    def stop(self) -> None:
        self._stop.set()
        for link in self.links:
            link.stop()

    def connected(self) -> bool:
        return all(link.is_connected for link in self.links)

    # ---- the device side -----------------------------------------------------------------------------
    def _birth(self, devices: list[SimDevice], link: MqttLink) -> None:
        for device in devices:
            topics = DeviceTopics(self.settings.topic_prefix, device.device_id)
            status = {"state": "online", "device_id": device.device_id, "time_unix_ms": int(time.time() * 1000),
                      "capabilities": ["updates"], "updates": {"enabled": True, "fleet": self.fleet,
                                                              "groups": device.groups}}
            link.publish(topics.status, json.dumps(status).encode(), qos=1, retain=True)
            self._report(device, "downloading" if device.chunks else "active", link=link)

    def _report(self, device: SimDevice, state: Phase, reason: str | None = None, link: MqttLink | None = None,
                step: str | None = None, detail: str | None = None) -> None:
        release = (None if device.release is None else
                   ReleaseRef(channel=device.release.channel, version=device.release.version))
        report = UpdateStateReport(device_id=device.device_id, state=state, reason=reason, release=release,
                                   active=device.active, step=step, detail=detail)
        topic = DeviceTopics(self.settings.topic_prefix, device.device_id).update_state
        (link or self._link_of[device.device_id]).publish(topic, report.encode(), qos=1, retain=True)

    def _group_offer(self, group: str, devices: list[SimDevice]) -> Handler:
        def handle(message: InboundMessage) -> None:
            for device in devices:
                if group in device.groups:
                    self._offer(device, message.payload)
        return handle

    def _device_offer(self, device: SimDevice) -> Handler:
        return lambda message: self._offer(device, message.payload)

    def _offer(self, device: SimDevice, envelope: bytes) -> None:
        if not envelope:
            return  # a withdrawn offer
        try:
            payload = dsse.verify(envelope, RELEASE_PAYLOAD_TYPE, self.root.release.key_map(),
                                  self.root.release.threshold)
            manifest = parse_manifest(payload)
        except UpdateError:
            self._count("refused")
            return
        with self._lock:
            if manifest.fleet != self.fleet or manifest.version <= device.seen.get(manifest.channel, 0):
                return  # another fleet, or already taken: ignored quietly, as a device does
            device.seen[manifest.channel] = manifest.version
            device.release = manifest
            device.chunks = {a.name: {} for a in manifest.artifacts}
            self.counters["offers"] += 1
        self._report(device, "downloading")
        if not device.stall:
            self._pull(device)

    def _pull(self, device: SimDevice) -> None:
        manifest = device.release
        if manifest is None:
            return
        device.asked_at = time.monotonic()
        topic = DeviceTopics(self.settings.topic_prefix, device.device_id).update_pull
        for artifact in manifest.artifacts:
            total = -(-artifact.size // manifest.chunk_size)
            have = device.chunks.get(artifact.name, {})
            missing = [i for i in range(total) if i not in have]
            for first in missing[::MAX_PULL_CHUNKS]:
                count = len([i for i in missing if first <= i < first + MAX_PULL_CHUNKS])
                request = PullRequest(channel=manifest.channel, version=manifest.version, artifact=artifact.name,
                                      first=first, count=count)
                self._link_of[device.device_id].publish(topic, request.encode(), qos=1)
                self._count("pulls")

    def _chunk(self, device: SimDevice) -> Handler:
        def handle(message: InboundMessage) -> None:
            try:
                frame = parse_chunk(message.payload)
            except UpdateError:
                return
            manifest, header = device.release, frame.header
            if manifest is None or header.kind != 0 or header.version != manifest.version \
                    or header.artifact not in device.chunks or not frame.data_is_intact():
                return
            with self._lock:
                device.chunks[header.artifact][header.index] = bytes(frame.data)
                self.counters["chunks"] += 1
                done = all(sum(len(c) for c in device.chunks[a.name].values()) == a.size for a in manifest.artifacts)
            if done:
                self._install(device, manifest)
        return handle

    def _install(self, device: SimDevice, manifest: ReleaseManifest) -> None:
        for artifact in manifest.artifacts:
            parts = device.chunks[artifact.name]
            digest = hashlib.sha256(b"".join(parts[i] for i in sorted(parts))).hexdigest()
            if digest != artifact.sha256:
                device.chunks[artifact.name] = {}
                self._report(device, "failed", reason="hash")
                return
        device.chunks = {}
        self._report(device, "installing", step="switched")
        if device.fail:
            self._report(device, "rolled_back", reason="load", detail="simulated: the model did not load")
            self._count("rolled_back")
            return
        device.active = ActiveModel(slot="slot-a", model=manifest.artifacts[0].name,
                                    release=ReleaseRef(channel=manifest.channel, version=manifest.version))
        self._report(device, "active", step="committed")
        self._count("active")

    def _retry_forever(self) -> None:
        while not self._stop.wait(1.0):
            now = time.monotonic()
            for device in list(self.devices.values()):
                if device.chunks and not device.stall and now - device.asked_at > RETRY_AFTER_S:
                    self._pull(device)

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] += 1


def plan_devices(total: int, groups: list[tuple[str, int]], fail: set[str],
                 stall: frozenset[str] = frozenset()) -> list[SimDevice]:
    """``groups`` as (name, count); devices are named <group>-<n> and fill the groups in order."""
    if sum(count for _, count in groups) != total:
        raise SystemExit(f"the --group counts add up to {sum(c for _, c in groups)}, not --devices {total}")
    return [SimDevice(f"{name}-{n}", [name], fail=f"{name}-{n}" in fail, stall=f"{name}-{n}" in stall)
            for name, count in groups for n in range(1, count + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edged.testing.fleet_sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mqtt", required=True)
    parser.add_argument("--topic-prefix", default="edged")
    parser.add_argument("--root", type=Path, required=True, help="the operator's KEYS/root.json")
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--group", action="append", default=[], metavar="NAME:COUNT")
    parser.add_argument("--fail", action="append", default=[], metavar="DEVICE", help="this device rolls back")
    parser.add_argument("--per-link", type=int, default=DEVICES_PER_LINK, help="devices per MQTT connection")
    args = parser.parse_args(argv)
    groups = [(name, int(count)) for name, _, count in (g.partition(":") for g in args.group)]
    root = read_self_signed_root(args.root.read_bytes())
    settings = MqttSettings(url=args.mqtt, topic_prefix=args.topic_prefix)
    fleet = SimulatedFleet(settings, root, plan_devices(args.devices, groups, set(args.fail)),
                           devices_per_link=args.per_link)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    fleet.start()
    announced = False
    while not stop.wait(0.2):
        if not announced and fleet.connected():
            announced = True
            print(f"fleet-sim ready: {args.devices} devices on {len(fleet.links)} connections", flush=True)
    fleet.stop()
    print(json.dumps({"fleet_sim": fleet.counters}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
