"""MqttSettings validation, secret files ($CREDENTIALS_DIRECTORY) and the TLS context builder."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edged.errors import ConfigError
from edged.mqtt.client_factory import build_tls_context, read_password, resolve_credential_path
from edged.mqtt.settings import MqttSettings
from tests.mosquitto import make_tls_files


def settings(**fields: Any) -> MqttSettings:
    return MqttSettings.model_validate({"url": "mqtt://broker", **fields})


def test_defaults_match_the_documented_discipline() -> None:
    value = settings()
    assert value.protocol == "5"
    assert value.topic_prefix == "edged"
    assert value.client_id is None
    assert (value.backoff_min_s, value.backoff_max_s, value.auth_retry_s) == (0.5, 30.0, 300.0)
    assert value.max_queued_messages >= 1
    assert value.broker_url().port == 1883


def test_toml_strings_become_paths_and_the_model_is_frozen() -> None:
    value = MqttSettings.model_validate(
        {
            "url": "mqtts://broker",
            "tls_ca_file": "/etc/edged/ca.crt",
            "tls_cert_file": "/etc/edged/dev.crt",
            "tls_key_file": "mqtt-key",
            "username": "dev-1",
            "password_file": "mqtt-password",
        }
    )
    assert value.tls_ca_file == Path("/etc/edged/ca.crt")
    assert value.password_file == Path("mqtt-password")
    with pytest.raises(ValidationError):
        value.url = "mqtt://other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"url": "mqtt://dev:secret@broker"}, "password_file"),
        ({"url": "http://broker"}, "not supported"),
        ({"url": "mqtt://broker", "tls_ca_file": "/ca.crt"}, "mqtts"),
        ({"url": "mqtts://broker", "tls_cert_file": "/c.crt"}, "together"),
        ({"url": "mqtt://dev@broker", "username": "dev"}, "both"),
        ({"password_file": "/pw"}, "no user name"),
        ({"backoff_min_s": 5.0, "backoff_max_s": 1.0}, "backoff_min_s"),
        ({"protocol": "3.1"}, "protocol"),
        ({"protocol": 5}, "protocol"),
        ({"keepalive_s": 1}, "keepalive_s"),
        ({"keepalive_s": "60"}, "keepalive_s"),
        ({"topic_prefix": "edged/#"}, "topic_prefix"),
        ({"topic_prefix": "/edged"}, "topic_prefix"),
        ({"client_id": "dev 1"}, "client_id"),
        ({"client_id": "a" * 129}, "client_id"),
        ({"max_queued_messages": 0}, "max_queued_messages"),
        ({"password_file": "../../etc/shadow", "username": "u"}, ".."),
        ({"password": "inline"}, "password"),
    ],
)
def test_invalid_settings_are_rejected(fields: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as caught:
        settings(**fields)
    assert complaint in str(caught.value)


def test_username_may_come_from_the_url() -> None:
    assert settings(url="mqtt://dev-1@broker", password_file="/run/pw").effective_username() == "dev-1"


def test_relative_secret_resolves_in_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "mqtt-password").write_text("s3cret\n")
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert resolve_credential_path(Path("mqtt-password"), environ) == tmp_path / "mqtt-password"
    assert read_password(Path("mqtt-password"), environ) == "s3cret"
    assert resolve_credential_path(Path("/abs/file"), environ) == Path("/abs/file")


def test_relative_secret_without_credentials_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        resolve_credential_path(Path("mqtt-password"), {})


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"\n", "empty"), (b"\xff\xfe", "UTF-8"), (b"x" * 70000, "longer")],
)
def test_bad_password_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "pw"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_password(path)


def test_password_file_keeps_inner_whitespace_and_strips_one_crlf(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_bytes(b" pass word \r\n")
    assert read_password(path) == " pass word "


def test_missing_password_file_names_the_file_not_the_content(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pw-missing"):
        read_password(tmp_path / "pw-missing")


def test_tls_context_verifies_the_broker_and_loads_the_client_cert(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    context = build_tls_context(
        settings(
            url="mqtts://127.0.0.1",
            tls_ca_file=str(files.ca_cert),
            tls_cert_file=str(files.client_cert),
            tls_key_file=str(files.client_key),
        )
    )
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_tls_key_may_be_a_systemd_credential(tmp_path: Path) -> None:
    files = make_tls_files(tmp_path)
    environ = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    value = settings(
        url="mqtts://127.0.0.1",
        tls_ca_file=str(files.ca_cert),
        tls_cert_file=str(files.client_cert),
        tls_key_file=files.client_key.name,
    )
    assert isinstance(build_tls_context(value, environ), ssl.SSLContext)


@pytest.mark.parametrize("broken", ["ca", "key"])
def test_unloadable_tls_files_are_config_errors(tmp_path: Path, broken: str) -> None:
    files = make_tls_files(tmp_path)
    if broken == "ca":
        files.ca_cert.write_text("not a certificate")
    else:
        files.client_key.write_bytes(files.server_key.read_bytes())  # a key that does not match
    value = settings(
        url="mqtts://127.0.0.1",
        tls_ca_file=str(files.ca_cert),
        tls_cert_file=str(files.client_cert),
        tls_key_file=str(files.client_key),
    )
    with pytest.raises(ConfigError):
        build_tls_context(value)
