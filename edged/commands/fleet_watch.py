"""`edged fleet watch`: a live table of the fleet from retained status and telemetry on the broker."""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from edged.jsonbody import json_object_or_none
from edged.commands.mqtt_options import add_mqtt_arguments, mqtt_settings
from edged.topics import fleet_rollout_filter, fleet_status_filter, fleet_telemetry_filter

REFRESH_S = 1.0
ENDED_SHOWN_S = 3600.0  # a finished or aborted rollout stays in the table for an hour, in one line
ROLLOUT_COLUMNS = ("wave", "phase", "devices", "active", "failed", "in progress", "deferred", "pending", "offline")
COLUMNS = ("device", "status", "model", "profile", "last telemetry", "ttft p50 ms", "tok/s p50", "power W", "energy J")


@dataclass
class DeviceView:
    device_id: str
    status: str = "?"
    model: str = "-"
    profile: str = "-"
    last_telemetry: float | None = None
    ttft_p50_ms: float | None = None
    tokens_per_s_p50: float | None = None
    power_w: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def apply_status(self, status: dict[str, Any]) -> None:
        self.status = str(status.get("state", "?"))
        model = status.get("model")
        if isinstance(model, dict):
            self.model = str(model.get("name", "-"))
        if status.get("profile"):
            self.profile = str(status["profile"])

    def apply_telemetry(self, record: dict[str, Any]) -> None:
        if record.get("kind") != "edged.device":
            return
        self.last_telemetry = record.get("time_unix_ms", 0) / 1000
        self.profile = str(record.get("edged.profile", self.profile))
        self.ttft_p50_ms = (record.get("edged.latency.time_to_first_token_ms") or {}).get("p50")
        self.tokens_per_s_p50 = (record.get("edged.decode.tokens_per_s") or {}).get("p50")
        self.power_w = record.get("hw.power")
        self.energy_j = record.get("hw.energy")
        self.energy_source = record.get("edged.energy.source")

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"}

    def row(self, now: float) -> tuple[str, ...]:
        def num(value: float | None, digits: int = 1) -> str:
            return "-" if value is None else f"{value:.{digits}f}"

        age = "-" if self.last_telemetry is None else f"{max(0.0, now - self.last_telemetry):.0f} s ago"
        energy = num(self.energy_j) + (" (est.)" if self.energy_source == "estimate" else "")
        return (self.device_id, self.status, self.model[:24], self.profile, age, num(self.ttft_p50_ms),
                num(self.tokens_per_s_p50), num(self.power_w, 2), energy)


def render_table(devices: dict[str, DeviceView], now: float) -> str:
    rows = [COLUMNS, *(devices[d].row(now) for d in sorted(devices))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    if not devices:
        lines.append("(no device has reported yet)")
    return "\n".join(lines)


def render_rollouts(rollouts: dict[str, dict[str, Any]], now: float) -> str:
    """The retained summaries of `edged fleet rollout`: waves and counts of running or paused ones."""
    lines = []
    for topic in sorted(rollouts):
        summary = rollouts[topic]
        phase, reason = str(summary.get("phase", "?")), summary.get("reason")
        head = f"rollout {str(summary.get('id', topic))[:80]}: {phase}" + (f" ({str(reason)[:160]})" if reason else "")
        if phase not in ("running", "paused"):
            updated = summary.get("updated_unix_ms")
            if isinstance(updated, (int, float)) and now - updated / 1000 < ENDED_SHOWN_S:
                lines.append(head)
            continue
        wave = summary.get("wave")
        listed = summary.get("waves")
        waves = [w for w in listed if isinstance(w, dict)][:32] if isinstance(listed, list) else []
        lines.append(head + (f", wave {wave} of {len(waves)}" if wave else ""))
        rows = [ROLLOUT_COLUMNS] + [tuple(str(w.get(k, "-"))[:24] for k in (
            "wave", "phase", "total", "succeeded", "failed", "in_progress", "deferred", "pending", "offline"))
            for w in waves]
        widths = [max(len(row[i]) for row in rows) for i in range(len(ROLLOUT_COLUMNS))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def device_from_topic(topic: str, prefix: str) -> str | None:
    parts = topic[len(prefix) + 1:].split("/") if topic.startswith(prefix + "/") else []
    return parts[0] if len(parts) == 2 else None


def cmd_fleet_watch(args: argparse.Namespace) -> int:
    from edged.mqtt.link import MqttLink

    settings = mqtt_settings(args)
    inbox: queue.Queue[Any] = queue.Queue(maxsize=10_000)
    link = MqttLink(settings, client_id=f"edged-watch-{int(time.time())}")
    for topic_filter in (fleet_status_filter(settings.topic_prefix), fleet_telemetry_filter(settings.topic_prefix),
                         fleet_rollout_filter(settings.topic_prefix)):
        link.subscribe(topic_filter, 1, lambda m: inbox.put_nowait(m) if not inbox.full() else None)
    link.start()
    devices: dict[str, DeviceView] = {}
    rollouts: dict[str, dict[str, Any]] = {}
    rollout_head = f"{settings.topic_prefix}/fleet/"
    end = time.monotonic() + args.duration if args.duration else None
    tty = sys.stdout.isatty() and not args.json
    try:
        while end is None or time.monotonic() < end:
            next_draw = time.monotonic() + REFRESH_S
            while (left := next_draw - time.monotonic()) > 0:
                try:
                    message = inbox.get(timeout=left)
                except queue.Empty:
                    break
                device_id = device_from_topic(message.topic, settings.topic_prefix)
                data = json_object_or_none(message.payload)
                if data is None:
                    continue  # not ours to judge; the table shows what parses
                if message.topic.startswith(rollout_head) and "/rollout/" in message.topic:
                    if len(rollouts) < 100:
                        rollouts[message.topic] = data
                        if args.json:
                            print(json.dumps({"rollout": data}), flush=True)
                    continue
                if device_id is None:
                    continue
                view = devices.setdefault(device_id, DeviceView(device_id))
                if message.topic.endswith("/status"):
                    view.apply_status(data)
                else:
                    view.apply_telemetry(data)
                if args.json:
                    print(json.dumps(view.as_json()), flush=True)
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J" + _screen(devices, rollouts) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        link.stop()
    if not tty and not args.json:
        print(_screen(devices, rollouts))
    return 0


def _screen(devices: dict[str, DeviceView], rollouts: dict[str, dict[str, Any]]) -> str:
    now = time.time()
    shown = render_rollouts(rollouts, now)
    return render_table(devices, now) + ("\n\n" + shown if shown else "")


def register(fleet_sub: Any) -> None:
    watch = fleet_sub.add_parser(
        "watch", help="live table of devices: status, model, profile, telemetry, latency, energy",
        description="Watch the fleet through the broker: retained status (online/offline/stopped), the "
                    "periodic device telemetry of every device under the topic prefix, and the waves and counts "
                    "of a staged rollout (`edged fleet rollout`) while one runs.",
        epilog="examples:\n  edged fleet watch --mqtt mqtt://broker.local:1883\n"
               "  edged fleet watch --mqtt mqtt://broker.local:1883 --json --duration 30 > fleet.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mqtt_arguments(watch)
    watch.add_argument("--json", action="store_true", help="print one JSON object per device update (for scripts)")
    watch.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: run "
                                                                    "until Ctrl-C); without a TTY the final table "
                                                                    "is printed at the end")
    watch.set_defaults(func=cmd_fleet_watch)
