"""`edged fleet command`: send a sealed operator command (profile override, status refresh) to one device."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from edged.commands.mqtt_options import add_mqtt_arguments, mqtt_settings
from edged.errors import ConfigError


def cmd_fleet_command(args: argparse.Namespace) -> int:
    from edged.crypto.keys import load_private_key_file
    from edged.clients.mqtt import SealedMqttClient

    try:
        identity = bytes.fromhex(args.device_identity)
    except ValueError:
        raise ConfigError("--device-identity must be the device's identity key in hex (edged keys show)") from None
    body: dict[str, Any] = ({"command": "status"} if args.action == "status"
                            else {"command": "profile", "set": args.profile})
    client_key = load_private_key_file(Path(args.client_key))
    with SealedMqttClient(mqtt_settings(args), device_id=args.device, client_key=client_key,
                          device_identity=identity, response_prefix=args.response_prefix) as client:
        print(json.dumps(client.command(body, timeout=args.timeout), indent=2))
    return 0


def register(fleet_sub: Any) -> None:
    command = fleet_sub.add_parser(
        "command", help="send a sealed command to a device: profile override or status refresh",
        description="Send an operator command over MQTT, sealed end to end like a request. The client key must be "
                    "on the device's allow-list with commands allowed (edged keys allow add ... --commands).",
        epilog="examples:\n"
               "  edged fleet command --mqtt mqtt://broker:1883 --device pi-1 --client-key ops.key \\\n"
               "      --device-identity 79b5...9664 --response-prefix edged/clients/ops profile eco\n"
               "  edged fleet command ... profile auto      hand the choice back to the governor\n"
               "  edged fleet command ... status            republish the device's status and print it",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mqtt_arguments(command)
    command.add_argument("--device", required=True, help="the device id")
    command.add_argument("--client-key", required=True, help="this operator's client private key file")
    command.add_argument("--device-identity", required=True, help="the device's pinned identity key, hex")
    command.add_argument("--response-prefix", required=True, help="the response prefix of this client's entry")
    command.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    profile = actions.add_parser("profile", help="override the power profile (or `auto`)")
    profile.add_argument("profile", help="a profile name, or auto")
    actions.add_parser("status", help="republish the retained status and print the device status")
    command.set_defaults(func=cmd_fleet_command)
