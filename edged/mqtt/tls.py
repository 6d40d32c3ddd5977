"""Build the client ``ssl.SSLContext`` for mqtts:// from the settings (CA, optional client cert)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from edged.errors import ConfigError
from edged.mqtt.credentials import resolve_credential_path
from edged.mqtt.settings import MqttSettings


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
