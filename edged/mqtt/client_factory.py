"""Build a configured paho-mqtt 2.x client from the settings: the broker secrets (absolute paths or
systemd credentials), the TLS context, the client itself, and MQTT 5 publish properties."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edged.errors import ConfigError
from edged.mqtt.publishing import StatusMessage
from edged.mqtt.settings import MqttSettings

MAX_PASSWORD_BYTES = 65535  # the MQTT password field is a 2-byte-length binary string


def resolve_credential_path(path: Path, environ: Mapping[str, str] | None = None) -> Path:
    """An absolute ``path`` as it is; a relative one inside ``$CREDENTIALS_DIRECTORY``.

    systemd sets ``CREDENTIALS_DIRECTORY`` for a unit with ``LoadCredential=`` or
    ``SetCredentialEncrypted=``; the files there are readable only by the service.
    """
    if path.is_absolute():
        return path
    env = os.environ if environ is None else environ
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            f"{path} is a relative path, which names a systemd credential, but "
            "$CREDENTIALS_DIRECTORY is not set; use an absolute path or LoadCredential="
        )
    return Path(directory) / path


def read_password(path: Path, environ: Mapping[str, str] | None = None) -> str:
    """The password in the file: UTF-8, one trailing newline removed, not empty."""
    resolved = resolve_credential_path(path, environ)
    try:
        raw = resolved.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the MQTT password file {resolved}: {exc.strerror}") from exc
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n"):
        raw = raw[:-1]
    if not raw:
        raise ConfigError(f"the MQTT password file {resolved} is empty")
    if len(raw) > MAX_PASSWORD_BYTES:
        raise ConfigError(f"the MQTT password file {resolved} is longer than {MAX_PASSWORD_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the MQTT password file {resolved} is not UTF-8") from exc


def build_tls_context(settings: MqttSettings, environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A context that verifies the broker (certificate and host name) and may present a client cert.

    TLS 1.2 is the floor: mosquitto 2.0 on Debian 12 offers 1.2 and 1.3.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_ca_file is not None:
        ca_file = resolve_credential_path(settings.tls_ca_file, environ)
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the MQTT CA file {ca_file}: {exc}") from exc
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        cert_file = resolve_credential_path(settings.tls_cert_file, environ)
        key_file = resolve_credential_path(settings.tls_key_file, environ)
        try:
            context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
        except (OSError, ssl.SSLError) as exc:
            # The message names files only; OpenSSL errors here never contain key bytes.
            raise ConfigError(f"cannot load the MQTT client certificate {cert_file} / key {key_file}: {exc}") from exc
    return context


logger = structlog.get_logger(__name__)

MAX_EXPIRY_S = 2**32 - 1  # Message Expiry Interval is a four-byte integer
# stop_network_thread waits this long, a few times, for paho's thread to end.
STOP_JOIN_S = 2.0
STOP_JOIN_ATTEMPTS = 3


MAX_LOOP_TIMEOUT_S = 30.0


class BoundedClient(mqtt.Client):
    """A paho client that will not read an incoming packet larger than ``max_packet_bytes``.

    MQTT 5 brokers honour the Maximum Packet Size sent in CONNECT and never forward a bigger
    message; a 3.1.1 broker (or a broken one) may. paho would buffer the whole packet, so a
    hostile publisher could fill a small device's memory. Once the remaining length is known
    and too big, the next read fails: paho closes the connection and reconnects, and with a
    clean session the broker forgets the message. ``on_oversize`` runs on paho's thread.
    """

    max_packet_bytes: int | None = None
    on_oversize: Callable[[int], None] | None = None
    # paho's network thread selects with a 1 s timeout, so an idle daemon woke every second only
    # for paho to find nothing due. Publishes and disconnects from other threads wake the select
    # through paho's socket pair, so the timeout only paces keepalive checks: a quarter of the
    # keepalive keeps PINGREQ well inside the broker's 1.5 x keepalive.
    loop_timeout_s: float = 1.0

    def _thread_main(self) -> None:  # what loop_start() runs, with our timeout instead of paho's 1 s
        try:
            self.loop_forever(timeout=self.loop_timeout_s, retry_first_connection=True)
        finally:
            self._thread = None

    def _sock_recv(self, bufsize: int) -> bytes:
        limit = self.max_packet_bytes
        packet = self._in_packet
        if limit is not None and packet["have_remaining"] and packet["remaining_length"] > limit:
            if self.on_oversize is not None:
                self.on_oversize(packet["remaining_length"])  # before any body byte; the socket closes next
            raise OSError(f"incoming packet of {packet['remaining_length']} bytes is over {limit}")
        return super()._sock_recv(bufsize)


def connect_properties(v5: bool, max_packet_bytes: int | None) -> Properties | None:
    """MQTT 5 CONNECT properties: Maximum Packet Size, so the broker never forwards more."""
    if not v5 or max_packet_bytes is None:
        return None
    properties = Properties(PacketTypes.CONNECT)
    properties.MaximumPacketSize = max_packet_bytes
    return properties


def build_client(
    settings: MqttSettings,
    client_id: str,
    will: StatusMessage | None,
    environ: Mapping[str, str] | None = None,
    max_packet_bytes: int | None = None,
    on_oversize: Callable[[int], None] | None = None,
) -> mqtt.Client:
    """A client with identity, secrets, TLS, will and limits set, no callbacks, not connected.

    Raises ConfigError for an unreadable password, CA, certificate or key file.
    """
    v5 = settings.protocol == "5"
    client = BoundedClient(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # Clean sessions: after an outage we want fresh requests, not a burst of stale ones.
        clean_session=None if v5 else True,
        reconnect_on_failure=True,
    )
    client.max_packet_bytes = max_packet_bytes
    client.loop_timeout_s = min(max(1.0, settings.keepalive_s / 4), MAX_LOOP_TIMEOUT_S)
    client.on_oversize = on_oversize
    client.suppress_exceptions = True  # a second net under the link's own guards
    client.on_socket_open = _no_delay
    client.max_inflight_messages_set(settings.max_inflight)
    client.max_queued_messages_set(settings.max_queued_messages)
    username = settings.effective_username()
    if username is not None:
        password = read_password(settings.password_file, environ) if settings.password_file is not None else None
        client.username_pw_set(username, password)
    if settings.broker_url().tls:
        client.tls_set_context(build_tls_context(settings, environ))
    if will is not None:
        client.will_set(will.topic, will.payload, qos=1, retain=will.retain)
    return client


def _no_delay(_client: mqtt.Client, _userdata: object, sock: object) -> None:
    """Send small packets at once: Nagle's algorithm holds a streamed token behind the previous one's ACK."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        pass  # not a TCP socket (e.g. a websocket wrapper): nothing to tune


def publish_properties(
    v5: bool, response_topic: str | None, correlation_data: bytes | None, expiry_s: int | None
) -> Properties | None:
    """MQTT 5 PUBLISH properties, or None when there are none or the link speaks 3.1.1."""
    if not v5 or (response_topic is None and correlation_data is None and expiry_s is None):
        return None
    properties = Properties(PacketTypes.PUBLISH)
    if response_topic is not None:
        properties.ResponseTopic = response_topic
    if correlation_data is not None:
        properties.CorrelationData = correlation_data
    if expiry_s is not None:
        properties.MessageExpiryInterval = max(1, min(expiry_s, MAX_EXPIRY_S))
    return properties


def stop_network_thread(client: mqtt.Client, client_id: str) -> None:
    """End paho's network thread after ``client.disconnect()``, waiting a bounded time."""
    # loop_stop() joins without a timeout. If paho's thread was inside a reconnect when we
    # called disconnect(), the new connection ignores it; disconnecting again closes that one.
    stopper = threading.Thread(target=client.loop_stop, name="mqtt-loop-stop", daemon=True)
    stopper.start()
    for _ in range(STOP_JOIN_ATTEMPTS):
        stopper.join(STOP_JOIN_S)
        if not stopper.is_alive():
            return
        client.disconnect()
    logger.error("mqtt network thread did not stop", client_id=client_id)
