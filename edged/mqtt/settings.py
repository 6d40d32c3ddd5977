"""The ``[mqtt]`` settings of the daemon config: broker, identity, TLS, secrets by file, limits."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from edged.errors import ConfigError
from edged.mqtt.url import BrokerUrl, parse_broker_url
from edged.validation import StrictModel

# Defaults with the reason for each value. Tests pass smaller values through the settings.
DEFAULT_KEEPALIVE_S = 60
DEFAULT_BACKOFF_MIN_S = 0.5  # first retry soon: most outages are a broker restart
DEFAULT_BACKOFF_MAX_S = 30.0  # a fleet of devices must not hammer a broker that comes back
DEFAULT_AUTH_RETRY_S = 300.0  # bad credentials will not fix themselves; retry rarely, quietly
DEFAULT_MAX_INFLIGHT = 20  # paho's and mosquitto's default
DEFAULT_MAX_QUEUED_MESSAGES = 1000  # mosquitto's per-client default; bounds memory while offline

_TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
_CLIENT_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
_USERNAME_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class MqttSettings(StrictModel):
    """How edged talks to its MQTT broker.

    Secrets never live in the TOML file: the password and the TLS private key are read from
    files, at ``MqttLink.start()``. A *relative* path in any ``*_file`` field is a systemd
    credential name, resolved against ``$CREDENTIALS_DIRECTORY`` (set by
    ``LoadCredential=mqtt-password:/etc/edged/mqtt-password`` in the unit), so
    ``password_file = "mqtt-password"`` works under ``DynamicUser=yes``. An absolute path is
    used as it is. Path fields are not strict because TOML gives strings.
    """

    url: str = Field(
        min_length=1,
        max_length=1024,
        description="Broker URL mqtt://[user@]host[:port] (1883) or mqtts://... (8883, TLS); "
        "a password in the URL is rejected, use password_file",
    )
    client_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=_CLIENT_ID_PATTERN,
        description="MQTT client id; unset means the daemon derives one from the device id",
    )
    protocol: Literal["5", "3.1.1"] = Field(
        default="5",
        description="MQTT protocol version; 5 gives response topics, expiry and reason codes",
    )
    keepalive_s: int = Field(
        default=DEFAULT_KEEPALIVE_S, ge=5, le=3600, description="Keepalive interval, seconds"
    )
    tls_ca_file: Path | None = Field(
        default=None,
        strict=False,
        description="PEM CA bundle that signs the broker certificate (mqtts:// only); unset "
        "means the system trust store",
    )
    tls_cert_file: Path | None = Field(
        default=None, strict=False, description="PEM client certificate for mutual TLS (mqtts:// only)"
    )
    tls_key_file: Path | None = Field(
        default=None,
        strict=False,
        description="PEM private key of tls_cert_file; absolute path or systemd credential name",
    )
    username: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=_USERNAME_PATTERN,
        description="User name for the broker (or put it in the URL, not both)",
    )
    password_file: Path | None = Field(
        default=None,
        strict=False,
        description="File holding only the broker password; absolute path or systemd credential name",
    )
    topic_prefix: str = Field(
        default="edged",
        min_length=1,
        max_length=128,
        pattern=_TOPIC_PREFIX_PATTERN,
        description="First topic levels of every edged topic, e.g. 'edged' or 'site-3/edged'",
    )
    backoff_min_s: float = Field(
        default=DEFAULT_BACKOFF_MIN_S,
        ge=0.05,
        le=60.0,
        description="Smallest reconnect delay (jittered, doubling), seconds",
    )
    backoff_max_s: float = Field(
        default=DEFAULT_BACKOFF_MAX_S, ge=0.1, le=3600.0, description="Largest reconnect delay, seconds"
    )
    auth_retry_s: float = Field(
        default=DEFAULT_AUTH_RETRY_S,
        ge=1.0,
        le=86400.0,
        description="Reconnect delay after the broker refused the credentials, seconds",
    )
    max_inflight: int = Field(
        default=DEFAULT_MAX_INFLIGHT, ge=1, le=1000, description="QoS 1 messages awaiting PUBACK at once"
    )
    max_queued_messages: int = Field(
        default=DEFAULT_MAX_QUEUED_MESSAGES,
        ge=1,
        le=100_000,
        description="QoS 1 messages held in memory (in flight plus waiting, also while offline); "
        "a publish beyond this fails at once",
    )

    @field_validator("url")
    @classmethod
    def _url_is_a_broker_url(cls, value: str) -> str:
        try:
            broker = parse_broker_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        if broker.password is not None:
            raise ValueError("the URL carries a password; put it in password_file instead")
        return value

    @field_validator("tls_ca_file", "tls_cert_file", "tls_key_file", "password_file")
    @classmethod
    def _path_is_plain(cls, value: Path | None) -> Path | None:
        if value is None:
            return None
        text = str(value)
        if text in ("", ".") or "\x00" in text or len(text) > 4096:
            raise ValueError("must be a file path")
        if not value.is_absolute() and ".." in value.parts:
            raise ValueError("a credential name must not contain '..'")
        return value

    @model_validator(mode="after")
    def _fields_agree(self) -> Self:
        broker = self.broker_url()
        has_tls_files = any(f is not None for f in (self.tls_ca_file, self.tls_cert_file, self.tls_key_file))
        if has_tls_files and not broker.tls:
            raise ValueError("tls_* files are set but the URL is mqtt://; use mqtts://")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.username is not None and broker.username is not None:
            raise ValueError("the user name is given both in the URL and in username; keep one")
        if self.password_file is not None and self.effective_username() is None:
            raise ValueError("password_file is set but no user name is (username or the URL)")
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        return self

    def broker_url(self) -> BrokerUrl:
        """The parsed URL (it was checked at validation, so this does not fail)."""
        return parse_broker_url(self.url)

    def effective_username(self) -> str | None:
        return self.username if self.username is not None else self.broker_url().username
