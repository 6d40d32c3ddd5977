"""The daemon's configuration: one strict pydantic tree from a TOML file plus `EDGED_*` overrides.

Environment overrides name a field by its path with `__` between levels, e.g.
``EDGED_SOCKET__PATH=/tmp/e.sock`` or ``EDGED_SHUTDOWN__DRAIN_TIMEOUT_S=5``; the value is read as a
TOML value when it parses as one (numbers, booleans, arrays) and as a string otherwise.
"""

from __future__ import annotations

import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

from pydantic import Field, Strict, ValidationError, field_validator, model_validator

from edged.crypto.settings import E2ESettings
from edged.errors import ConfigError
from edged.validation import StrictModel, describe_validation_error, read_toml
from edged.fleet.settings import UpdateSettings
from edged.mqtt.settings import MqttSettings
from edged.power.governor_rules import GovernorRules

MAX_CONFIG_BYTES = 256 * 1024
ENV_PREFIX = "EDGED_"
# Variables for the test, benchmark and build tooling (scripts/setup, scripts/build-engine), not the
# daemon; every other EDGED_* must be a config key.
NOT_CONFIG_PREFIXES = ("EDGED_HW", "EDGED_TEST_", "EDGED_REQUIRE_", "EDGED_BENCH_")
NOT_CONFIG_NAMES = frozenset({"EDGED_NATIVE", "EDGED_ENGINE_WHEEL", "EDGED_CACHE"})

# TOML has no path type: paths arrive as strings and are converted, everything else stays strict.
PathField = Annotated[Path, Strict(False)]


class SocketConfig(StrictModel):
    path: PathField | None = Field(None, description="Unix socket path; default under the runtime dir")
    mode: int = Field(0o660, ge=0, le=0o777, description="file mode of the socket (octal in TOML: 0o660)")
    max_frame_bytes: int = Field(1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="largest frame accepted")
    plaintext_uids: list[int] | None = Field(
        None, description="peer uids allowed to send plaintext (kind 0x02); default: root and the daemon's own uid"
    )
    plaintext_gids: list[int] | None = Field(
        None, description="peer gids (primary or supplementary) allowed to send plaintext; "
        "default: the daemon's group unless plaintext_uids is set"
    )
    max_connections: int = Field(64, ge=1, le=4096, description="concurrent connections; more are refused "
                                 "(root and the daemon's user are not counted and never refused)")
    max_connections_per_uid: int = Field(8, ge=1, le=4096,
                                         description="concurrent connections of one uid other than root and the "
                                         "daemon's user")

    @field_validator("plaintext_uids", "plaintext_gids")
    @classmethod
    def _not_nobody(cls, ids: list[int] | None) -> list[int] | None:
        if ids is not None and 65534 in ids:
            raise ValueError("65534 is nobody/nogroup, the id every unmapped user gets: allowing it would give "
                             "plaintext to everyone; name the real uids or gids")
        return ids


class ModelConfig(StrictModel):
    path: PathField | None = Field(None, description="GGUF file or ONNX directory; default: the embedded demo model")
    prefix_cache_bytes: int = Field(64 * 1024 * 1024, ge=0, le=16 * 1024**3,
                                    description="disk for the KV state of recent system prompts in the state "
                                                "dir's prefix-cache/ (GGUF only), so the first request after a "
                                                "restart, profile switch or idle unload starts warm; 0 = off")


class RequestLimits(StrictModel):
    default_deadline_ms: int = Field(120_000, ge=100, le=3_600_000, description="deadline when a request sets none")
    max_deadline_ms: int = Field(600_000, ge=100, le=86_400_000, description="largest deadline a request may ask")
    max_prompt_chars: int = Field(64_000, ge=16, le=4_000_000, description="total characters of all messages")


class ShutdownConfig(StrictModel):
    drain_timeout_s: float = Field(10.0, ge=0, le=600, description="how long SIGTERM waits for in-flight requests")


class LogConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field("auto", description="auto: console on a TTY, else JSON")
    log_prompts: bool = Field(False, description="include prompt and answer text in debug logs (privacy risk)")


class ProfileConfig(StrictModel):
    name: str | None = Field(None, min_length=1, max_length=64,
                             description="the profile when no power condition is active; default: "
                                         "power.governor.default_profile (balanced)")
    directory: PathField | None = Field(None, description="profiles directory; default: the shipped profiles/")


class PowerConfig(StrictModel):
    governor: GovernorRules = Field(default_factory=GovernorRules, description="thresholds, dwell, profile choices")
    sysfs_root: PathField = Field(Path("/"), description="where sysfs/procfs are read from (tests use fake trees)")
    board: str | None = Field(None, max_length=64, description="board for energy estimates; default: detected")


class TelemetryConfig(StrictModel):
    enabled: bool = Field(True, description="publish telemetry when MQTT is configured")
    interval_s: float = Field(60.0, ge=1.0, le=86_400.0, description="period of the device state record")
    spool_max_bytes: int = Field(8 * 1024 * 1024, ge=4096, le=1024**3,
                                 description="cap of the store-and-forward spool; the oldest records go first")


class PrivacyConfig(StrictModel):
    pad_responses: bool = Field(False, description="pad sealed response chunks to size buckets (hides token lengths)")
    chunk_interval_ms: int = Field(0, ge=0, le=100, description="over MQTT, send response chunks at most this often, "
                                                                "batching tokens (hides token timing; adds latency)")


DISCOVERY_PREFIX_PATTERN = r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*"


class HomeAssistantConfig(StrictModel):
    enabled: bool = Field(False, description="announce this device to Home Assistant by MQTT discovery (needs [mqtt]); "
                                             "switching it off removes the announced entities")
    discovery_prefix: str = Field("homeassistant", min_length=1, max_length=64,
                                  pattern=f"^{DISCOVERY_PREFIX_PATTERN}$",
                                  description="Home Assistant's discovery prefix; its birth messages come on "
                                              "<prefix>/status")
    device_name: str | None = Field(None, min_length=1, max_length=64,
                                    description="name of the device in Home Assistant; default: edged <device_id>")
    allow_profile_select: bool = Field(False, description="offer a profile select that anyone who can publish on "
                                                          "the broker can use (unauthenticated; see docs/security.md)")


class WyomingConfig(StrictModel):
    uri: str | None = Field(None, max_length=512, description="serve Wyoming here: unix:///PATH or tcp://HOST:PORT; "
                                                              "unset = off")
    allow_remote: bool = Field(False, description="allow a tcp:// host other than loopback (Wyoming has no "
                                                  "authentication: anyone who reaches the port can ask)")
    mode: int = Field(0o660, ge=0, le=0o777, description="file mode of a unix:// socket")
    system_prompt: str = Field("You are a voice assistant. Answer in one or two short sentences.",
                               max_length=8000, description="system message before every transcript; empty = none")
    max_tokens: int = Field(128, ge=1, le=4096, description="most tokens of one spoken answer")
    streaming: bool = Field(True, description="send handled-chunk events as tokens come (the final handled "
                                              "event always carries the whole answer)")
    languages: list[Annotated[str, Field(pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")]] = Field(
                                 default_factory=lambda: ["en"], min_length=1, max_length=32,
                                 description="languages announced in the Wyoming info (Home Assistant offers the "
                                             "agent for these)")
    max_connections: int = Field(8, ge=1, le=256,
                                 description="concurrent Wyoming connections; more are refused (one that completes "
                                             "no event for 60 s while not being answered is closed)")

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> "WyomingConfig":
        if self.uri is not None:
            from edged.transports.wyoming_uri import parse_wyoming_uri

            parse_wyoming_uri(self.uri, allow_remote=self.allow_remote)  # ValueError names the problem
        return self


class HttpConfig(StrictModel):
    """The OpenAI-compatible HTTP API (edged/transports/http); its HTTP library is imported only when enabled."""

    enabled: bool = Field(True, description="serve the OpenAI-compatible HTTP API and /metrics")
    socket: PathField | None = Field(None, description="HTTP Unix socket; default http.sock beside the frame socket "
                                                       "(same file mode and plaintext peer rule as [socket])")
    listen: str | None = Field(None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$",
                               description="also listen on TCP HOST:PORT (every request needs an API key); "
                                           "a non-loopback host needs tls_cert and tls_key")
    tls_cert: PathField | None = Field(None, description="PEM certificate chain for the TCP listener")
    tls_key: PathField | None = Field(None, description="PEM private key of tls_cert")

    @model_validator(mode="after")
    def _tls_pair(self) -> "HttpConfig":
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        if self.listen is not None and not 0 < int(self.listen.rsplit(":", 1)[1]) < 65536:
            raise ValueError("listen: the port must be 1..65535")
        return self


class Config(StrictModel):
    device_id: str = Field(
        default_factory=lambda: socket.gethostname() or "edged",
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$",
        description="this device's id: MQTT topics, prekey records and telemetry use it",
    )
    state_dir: PathField | None = Field(None, description="keys, allow-list, spool, model slots")
    socket: SocketConfig = SocketConfig()
    model: ModelConfig = ModelConfig()
    profile: ProfileConfig = ProfileConfig()
    limits: RequestLimits = RequestLimits()
    shutdown: ShutdownConfig = ShutdownConfig()
    log: LogConfig = LogConfig()
    e2e: E2ESettings = E2ESettings()
    privacy: PrivacyConfig = PrivacyConfig()
    power: PowerConfig = PowerConfig()
    mqtt: MqttSettings | None = Field(None, description="broker connection; absent = Unix socket only")
    telemetry: TelemetryConfig = TelemetryConfig()
    updates: UpdateSettings | None = Field(None, description="signed model updates over MQTT (needs [mqtt]); "
                                                             "absent = off")
    http: HttpConfig = HttpConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    wyoming: WyomingConfig = WyomingConfig()


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key.startswith(NOT_CONFIG_PREFIXES) or key in NOT_CONFIG_NAMES:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except (ValueError, RecursionError):  # not TOML (or a 5,000-digit number, or nested too deeply):
            value = raw  # taken as a string, so the setting's own validation names the variable
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another override")
        node[path[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Build the config from an optional file, then env overrides, then command-line overrides."""
    data = read_toml(path, MAX_CONFIG_BYTES) if path is not None else {}
    data = _merge(data, _env_overrides(os.environ if environ is None else environ))
    data = _merge(data, overrides or {})
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, str(path) if path else "configuration",
                                                    show_values=True)) from None
