"""The `edged` command line: serve, ask, status, check-config, profile, and the keys/profiles/fleet groups."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged.errors import ConfigError, EdgedError

if TYPE_CHECKING:
    from edged.config import Config

EPILOG = """\
examples:
  edged serve                                  run with the embedded demo model
  edged ask "What is the capital of France?"   ask the running daemon
  edged status                                 model, profile, queue and uptime as JSON
  edged check-config /etc/edged/edged.toml     validate a config file
  edged convert onnx model.gguf ./model-onnx   convert a GGUF for the ONNX engine
  edged doctor                                 check the engine, CPU variant, model, sensors and clock
  edged ha forget --config /etc/edged/edged.toml   remove this device from Home Assistant
  edged <command> --help                       details of one command

docs: README.md and docs/ (protocol, operations, security, fleet, benchmarks)
"""


def _add_socket(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", type=Path, default=None,
                        help="daemon socket (default: $EDGED_SOCKET__PATH, else the runtime dir's edged.sock)")


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    import os

    from edged.paths import default_socket_path

    env = os.environ.get("EDGED_SOCKET__PATH")
    return Path(env) if env else default_socket_path()


def cmd_serve(args: argparse.Namespace) -> int:
    from edged.daemon import Daemon
    from edged.log import configure_logging

    config = serve_config(args)
    configure_logging(config.log.level, config.log.format, config.log.log_prompts)
    return asyncio.run(Daemon(config).run())


def serve_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """The config `edged serve` runs with: the file, then ``EDGED_*`` (from ``environ``, by default the
    process's), then the command-line options."""
    from edged.config import load_config

    overrides: dict[str, Any] = {}
    if args.socket:
        overrides.setdefault("socket", {})["path"] = str(args.socket)
    if args.state_dir:
        overrides["state_dir"] = str(args.state_dir)
    if args.model:
        overrides.setdefault("model", {})["path"] = str(args.model)
    if args.profile:
        overrides.setdefault("profile", {})["name"] = args.profile
    if args.device_id:
        overrides["device_id"] = args.device_id
    if args.mqtt:
        overrides.setdefault("mqtt", {})["url"] = args.mqtt
    return load_config(args.config, environ=environ, overrides=overrides)


def _structured_fields(args: argparse.Namespace) -> dict[str, Any]:
    from edged.structured.answers import schema_format_from_file, tool_choice, tools_from_files

    fields: dict[str, Any] = {}
    if args.json_schema:
        fields["response_format"] = schema_format_from_file(args.json_schema)
    if args.tool:
        fields["tools"] = tools_from_files(args.tool)
    if args.tool_choice:
        if not args.tool:
            raise ConfigError("--tool-choice needs at least one --tool FILE")
        fields["tool_choice"] = tool_choice(args.tool_choice)
    return fields


def cmd_ask(args: argparse.Namespace) -> int:
    from edged.clients.socket import SocketClient
    from edged.structured.answers import Answer

    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    body: dict[str, Any] = {"messages": messages, "stream": True, "max_tokens": args.max_tokens,
                            "temperature": args.temperature, "priority": args.priority}
    body |= _structured_fields(args)
    answer = Answer()
    from edged.paths import check_socket_dir

    if not args.sealed:  # plaintext goes only to a socket no other local user can have swapped
        check_socket_dir(_socket_path(args), create=False)
    with SocketClient(_socket_path(args)) as client:
        events = _ask_sealed(client, body, args) if args.sealed else client.ask(body)
        for event in events:
            answer.add(event)
            for choice in event.get("choices", []):
                sys.stdout.write(choice.get("delta", {}).get("content") or "")
                sys.stdout.flush()
    for call in answer.tool_calls:  # one JSON line per call: its name and arguments (a string if cut short)
        try:
            arguments = json.loads(call["function"]["arguments"])
        except json.JSONDecodeError:
            arguments = call["function"]["arguments"]
        sys.stdout.write(json.dumps({"tool_call": call["function"]["name"], "arguments": arguments}))
    sys.stdout.write("\n")
    final = answer.final
    if args.stats:
        print(json.dumps({"usage": final.get("usage"), "edged": final.get("edged")}), file=sys.stderr)
    return 0


def _ask_sealed(client: Any, body: dict[str, Any], args: argparse.Namespace) -> Any:
    from edged.crypto.client import SealedRequest
    from edged.crypto.keys import load_private_key_file
    from edged.crypto.padding import pad_json

    if not args.client_key or not (args.device_identity or args.fingerprint):
        raise ConfigError("--sealed needs --client-key FILE and the pinned device (--device-identity HEX or "
                          "--fingerprint FP; `edged keys show` on the device prints both)")
    try:
        pinned = bytes.fromhex(args.device_identity) if args.device_identity else None
    except ValueError:
        raise ConfigError("--device-identity must be the 64 hex digits of the device's identity key") from None
    prekey, identity = client.fetch_prekey(device_identity=pinned, fingerprint=args.fingerprint)
    sealed = SealedRequest.build(client_key=load_private_key_file(args.client_key), prekey=prekey,
                                 identity_pub=identity, request_topic="local", resp_topic="local",
                                 body=pad_json(body) if args.pad else json.dumps(body).encode())
    return client.ask_sealed(sealed.data, sealed.opener)


def cmd_status(args: argparse.Namespace) -> int:
    from edged.clients.socket import SocketClient

    with SocketClient(_socket_path(args), timeout=10) as client:
        print(json.dumps(client.control("status"), indent=2))
    return 0


def cmd_profile_set(args: argparse.Namespace) -> int:
    from edged.clients.socket import SocketClient

    with SocketClient(_socket_path(args), timeout=10) as client:
        print(json.dumps(client.control("profile", set=args.name)))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from edged.config import load_config

    load_config(args.file)
    print(f"{args.file}: OK")
    return 0


# These need none of the command groups: skipping their imports keeps `edged serve` fast to start.
CORE_COMMANDS = ("serve", "ask", "status", "check-config", "profile")


def build_parser(with_groups: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description="edged: an inference daemon for edge devices.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground",
                           description="Run the daemon in the foreground until SIGTERM/SIGINT. With no config and "
                                       "no --model it serves the embedded SmolLM2-135M demo model.",
                           epilog="examples:\n  edged serve --socket /tmp/edged.sock --state-dir /tmp/edged-state\n"
                                  "  edged serve --mqtt mqtt://broker.local:1883 --device-id pi-kitchen-1",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--config", type=Path, help="TOML config file (see docs/operations.md)")
    _add_socket(serve)
    serve.add_argument("--state-dir", type=Path, help="keys, allow-list, spool and model slots")
    serve.add_argument("--model", type=Path, help="a GGUF file or an ONNX model directory")
    serve.add_argument("--profile", help="power profile to start with (edged profiles list)")
    serve.add_argument("--device-id", help="this device's id (default: the host name)")
    serve.add_argument("--mqtt", metavar="URL",
                       help="also serve sealed requests and publish status and telemetry through this broker: "
                            "mqtt://HOST:PORT or mqtts://HOST:PORT (TLS and credentials: [mqtt] in the config)")
    serve.set_defaults(func=cmd_serve)

    ask = sub.add_parser("ask", help="ask the running daemon and stream the answer",
                         epilog='examples:\n  edged ask --max-tokens 64 --system "Answer briefly." "Why is the sky blue?"\n'
                                '  edged ask --sealed --client-key me.key --fingerprint 3f2a... "Hello"\n'
                                '  edged ask --json-schema city.json "A city and its population"\n'
                                '  edged ask --tool weather.json --tool-choice get_weather "Weather in Oslo?"',
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_socket(ask)
    ask.add_argument("--max-tokens", type=int, default=256, help="most tokens to generate (default 256)")
    ask.add_argument("--system", help="a system message before the prompt")
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ask.add_argument("--priority", choices=["interactive", "normal", "background"], default="interactive")
    ask.add_argument("--stats", action="store_true", help="print usage and timing as JSON on stderr")
    ask.add_argument("--sealed", action="store_true",
                     help="seal the request end to end (e2e-v1) instead of sending plaintext")
    ask.add_argument("--client-key", type=Path, help="with --sealed: this client's private key (edged keys client-new)")
    ask.add_argument("--device-identity", help="with --sealed: the pinned device identity key, hex")
    ask.add_argument("--fingerprint", help="with --sealed: the pinned device fingerprint (edged keys show)")
    ask.add_argument("--pad", action="store_true", help="with --sealed: pad the request to a size bucket")
    ask.add_argument("--json-schema", type=Path, metavar="FILE",
                     help="answer with JSON that validates against the JSON Schema in FILE (docs/protocol.md)")
    ask.add_argument("--tool", type=Path, action="append", metavar="FILE",
                     help="offer the tool(s) in FILE (an OpenAI tool object or a list); repeat for more")
    ask.add_argument("--tool-choice", metavar="NAME",
                     help="none, auto (default), required, or a tool's name to force that call")
    ask.add_argument("prompt", help="the question")
    ask.set_defaults(func=cmd_ask)

    status = sub.add_parser("status", help="print the daemon's status as JSON")
    _add_socket(status)
    status.set_defaults(func=cmd_status)

    check = sub.add_parser("check-config", help="validate a config file and name each bad field")
    check.add_argument("file", type=Path)
    check.set_defaults(func=cmd_check_config)

    profile = sub.add_parser("profile", help="change the running daemon's power profile")
    profile_sub = profile.add_subparsers(dest="profile_command", required=True, metavar="ACTION")
    profile_set = profile_sub.add_parser("set", help="override the governor with a named profile",
                                         description="Pin a power profile (a local override, which wins over "
                                                     "a remote one); `auto` hands the choice back to the governor. "
                                                     "A critical temperature still overrules an override.",
                                         epilog="examples:\n  edged profile set eco\n  edged profile set auto",
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_socket(profile_set)
    profile_set.add_argument("name")
    profile_set.set_defaults(func=cmd_profile_set)

    if with_groups:
        _register_groups(sub)
    return parser


def _register_groups(sub: Any) -> None:
    from edged.commands import convert, doctor, ha, keys, profiles

    convert.register(sub)
    doctor.register(sub)
    ha.register(sub)
    keys.register(sub)
    profiles.register(sub)
    fleet = sub.add_parser("fleet", help="operator tools: keys, releases, depot, push, watch",
                           description="Fleet operator tools.")
    fleet_sub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    from edged.commands import fleet_keys, fleet_ops

    fleet_keys.register(fleet_sub)
    fleet_ops.register(fleet_sub)
    from edged.commands import fleet_command, fleet_rollout, fleet_watch

    fleet_watch.register(fleet_sub)
    fleet_rollout.register(fleet_sub)
    fleet_command.register(fleet_sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(with_groups=not argv or argv[0] not in CORE_COMMANDS)
    args = parser.parse_args(argv)
    if args.func is not cmd_serve:
        from edged.log import configure_logging

        # Tools print their results on stdout; their own log lines go to stderr, warnings and up.
        configure_logging(level="warning", fmt="console", stream=sys.stderr)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit (status 120)
        return code
    except ConfigError as exc:
        print(f"edged: configuration error: {exc}", file=sys.stderr)
        return 2
    except EdgedError as exc:
        print(f"edged: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `edged doctor | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
