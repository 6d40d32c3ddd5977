"""`edged ha forget`: remove a device's Home Assistant entities from the broker (empty retained configs)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from edged.errors import ConfigError, TransportError

CONNECT_TIMEOUT_S = 15.0
ACK_TIMEOUT_S = 10.0


def cmd_ha_forget(args: argparse.Namespace) -> int:
    from edged.config import load_config
    from edged.homeassistant.entities import ALL_ENTITIES, HaTopics
    from edged.homeassistant.feature import MARKER, read_marker
    from edged.mqtt.link import MqttLink
    from edged.paths import default_state_dir
    from edged.topics import DeviceTopics

    overrides: dict[str, Any] = {}
    if args.device_id:
        overrides["device_id"] = args.device_id
    if args.mqtt:
        overrides.setdefault("mqtt", {})["url"] = args.mqtt
    if args.discovery_prefix:
        overrides.setdefault("homeassistant", {})["discovery_prefix"] = args.discovery_prefix
    config = load_config(args.config, overrides=overrides)
    if config.mqtt is None:
        raise ConfigError("edged ha forget needs the broker: an [mqtt] section in --config, or --mqtt URL")
    topics = HaTopics(DeviceTopics(config.mqtt.topic_prefix, config.device_id), config.homeassistant.discovery_prefix)
    state_dir = config.state_dir or default_state_dir()
    announced = read_marker(state_dir, topics.node)
    targets = sorted({*(topics.config(e) for e in ALL_ENTITIES), *announced, topics.state, topics.update})
    # Its own client id: reusing the daemon's would disconnect a running daemon.
    client_id = f"edged-{config.device_id}-ha-forget"[:128]
    link = MqttLink(config.mqtt.model_copy(update={"client_id": client_id}), client_id=client_id)
    link.start()
    try:
        end = time.monotonic() + CONNECT_TIMEOUT_S
        while not link.is_connected:
            if time.monotonic() > end:
                raise TransportError(f"no connection to {config.mqtt.broker_url().redacted()} within "
                                     f"{CONNECT_TIMEOUT_S:.0f} s; check [mqtt] and that the broker is up")
            time.sleep(0.05)
        handles = [link.publish(topic, b"", qos=1, retain=True) for topic in targets]
        refused = [h.topic for h in handles if not h.wait(ACK_TIMEOUT_S)]
    finally:
        link.stop()
    if refused:
        raise TransportError(f"the broker did not accept {len(refused)} removals (an ACL?), e.g. {refused[0]}")
    try:
        (state_dir / MARKER).unlink(missing_ok=True)
    except OSError:
        pass  # another user's state dir: the daemon forgets it at its next announce
    print(f"removed the Home Assistant entities of {config.device_id} under {topics.discovery_prefix}/ "
          f"({len(targets)} retained topics cleared)")
    if config.homeassistant.enabled:
        print("note: [homeassistant] enabled = true in this config; a running daemon announces the device again "
              "at its next connect or when Home Assistant restarts. Set enabled = false to keep it away.")
    return 0


def register(sub: Any) -> None:
    ha = sub.add_parser("ha", help="Home Assistant: remove a device's discovered entities",
                        description="Home Assistant MQTT discovery tools (docs/operations.md).")
    ha_sub = ha.add_subparsers(dest="ha_command", required=True, metavar="ACTION")
    forget = ha_sub.add_parser(
        "forget", help="publish empty retained configs so Home Assistant drops this device",
        description="Remove the device's Home Assistant entities: empty retained payloads on every discovery "
                    "topic it uses (and its retained values), through the broker of the config's [mqtt]. "
                    "Works whether or not the daemon runs; one with [homeassistant] enabled announces again.",
        epilog="examples:\n  edged ha forget --config /etc/edged/edged.toml\n"
               "  edged ha forget --mqtt mqtt://broker:1883 --device-id pi-kitchen-1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    forget.add_argument("--config", type=Path, help="the daemon's TOML config ([mqtt], device_id, [homeassistant])")
    forget.add_argument("--device-id", help="the device whose entities go (default: the config's device_id)")
    forget.add_argument("--mqtt", metavar="URL", help="broker URL (default: the config's [mqtt] url)")
    forget.add_argument("--discovery-prefix", help="Home Assistant's discovery prefix (default: the config's)")
    forget.set_defaults(func=cmd_ha_forget)
