"""Broker connection options shared by the operator commands (fleet watch, depot, push, status)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from edged.validation import describe_validation_error
from edged.errors import ConfigError
from edged.mqtt.settings import MqttSettings


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker")
    group.add_argument("--mqtt", required=True, metavar="URL", help="mqtt://HOST:PORT or mqtts://HOST:PORT")
    group.add_argument("--topic-prefix", default="edged", help="first topic levels of edged topics (default edged)")
    group.add_argument("--username", help="broker user name")
    group.add_argument("--password-file", help="file holding only the broker password")
    group.add_argument("--ca-file", help="PEM CA that signs the broker certificate (mqtts)")
    group.add_argument("--cert-file", help="PEM client certificate (mqtts with client certificates)")
    group.add_argument("--key-file", help="PEM key of --cert-file")
    group.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="MQTT version (default 5)")


def mqtt_settings(args: argparse.Namespace) -> MqttSettings:
    values: dict[str, Any] = {"url": args.mqtt, "topic_prefix": args.topic_prefix, "protocol": args.protocol}
    optional = {"username": args.username, "password_file": args.password_file, "tls_ca_file": args.ca_file,
                "tls_cert_file": args.cert_file, "tls_key_file": args.key_file}
    values |= {key: value for key, value in optional.items() if value is not None}
    try:
        return MqttSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, "broker options")) from None
