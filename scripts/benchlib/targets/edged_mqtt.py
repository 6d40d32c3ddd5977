"""edged over MQTT with sealed requests, through a mosquitto the benchmark starts on a free loopback port.

The daemon is `edged serve --mqtt mqtt://127.0.0.1:PORT` with telemetry on (as shipped), provisioned
with the real `edged keys` commands: one client for MQTT (responses under edged/clients/bench) and one
for sealed requests over the Unix socket (prefix `local`), which the sealed-socket scenario uses to
compare sealed and plaintext requests on this same daemon.

The benchmark's MQTT client stays connected for the whole run, as a real client would; each request's
clock starts before it is sealed, and stops at the first content chunk opened from the broker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import structlog

from benchlib.mosquitto import Broker
from benchlib.prompts import Messages
from benchlib.provision import DeviceKeys, provision
from benchlib.samples import RequestSample
from benchlib.targets.base import CHAT, EDGED_DAEMON, PROCESS, SEALED_SOCKET, SERVER, StartupInfo
from benchlib.targets.edged_socket import REQUEST_TIMEOUT_S, EdgedSocketTarget, chat_body, sample_from_events
from benchlib.targets.sealed_socket import SealedSocketClient

DEVICE_ID = "bench"
MQTT_CLIENT, MQTT_PREFIX = "bench", "edged/clients/bench"
SOCKET_CLIENT, SOCKET_PREFIX = "bench-local", "local"
PREKEY_TIMEOUT_S = 30.0


class EdgedMqttTarget(EdgedSocketTarget):
    name = "edged-mqtt"
    label = "edged (MQTT, sealed)"
    capabilities = frozenset({CHAT, PROCESS, SERVER, EDGED_DAEMON, SEALED_SOCKET})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker = Broker(self._dir / "mosquitto")
        self._keys: DeviceKeys | None = None
        self._client: Any = None
        self._sealed_socket: SealedSocketClient | None = None

    def prepare(self) -> None:
        self._broker.start()
        self._keys = provision(self.state_dir, self._dir / "client-keys",
                               {MQTT_CLIENT: MQTT_PREFIX, SOCKET_CLIENT: SOCKET_PREFIX}, env=self.environment())

    def serve_args(self) -> list[str]:
        return [*super().serve_args(), "--device-id", DEVICE_ID, "--mqtt", self._broker.url]

    def environment(self) -> dict[str, str]:
        env = super().environment()
        # This machine's kernel may report an unsynchronised clock although the host keeps time; without
        # this the daemon refuses every sealed MQTT request (clock_policy=reject).
        env["EDGED_E2E__CLOCK_POLICY"] = "trust-system-clock"
        env["EDGED_TELEMETRY__ENABLED"] = "true"   # the default, stated: idle CPU is measured with it on
        return env

    def start(self) -> StartupInfo:
        socket_ready = super().start()
        assert self._keys is not None
        # The MQTT client logs through structlog; keep the benchmark's stdout for the results.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        from edged.crypto.keys import load_private_key_file  # noqa: PLC0415
        from edged.clients.mqtt import SealedMqttClient  # noqa: PLC0415
        from edged.mqtt.settings import MqttSettings  # noqa: PLC0415

        mqtt_key = self._keys.clients[MQTT_CLIENT]
        self._client = SealedMqttClient(MqttSettings(url=self._broker.url), device_id=DEVICE_ID,
                                        client_key=load_private_key_file(mqtt_key.key_file),
                                        device_identity=self._keys.identity, response_prefix=MQTT_PREFIX)
        self._client.__enter__()
        # Ready over MQTT = the daemon's signed, retained prekey record reached the client.
        self._client.prekey(timeout=PREKEY_TIMEOUT_S)
        ready_s = time.perf_counter() - self._spawned_at
        local_key = self._keys.clients[SOCKET_CLIENT]
        self._sealed_socket = SealedSocketClient(self.socket_path, local_key.key_file, self._keys.identity)
        return StartupInfo(ready_s=ready_s, details={**socket_ready.details, "socket_ready_s": socket_ready.ready_s,
                                                     "identity_fingerprint": self._keys.fingerprint})

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        sent = time.perf_counter()   # ask() seals and publishes on the first next(): both are timed
        return sample_from_events(prompt_id, self._client.ask(chat_body(messages, max_tokens),
                                                              timeout=REQUEST_TIMEOUT_S), sent)

    def sealed_socket_chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        assert self._sealed_socket is not None
        return self._sealed_socket.chat(messages, max_tokens, prompt_id)

    def stop(self) -> dict[str, Any]:
        if self._client is not None:
            try:
                self._client.__exit__(None, None, None)
            except Exception:  # noqa: BLE001  (a failing disconnect must not keep the daemon running)
                pass
            self._client = None
        # The daemon first: stopped after the broker it would only log reconnect attempts.
        result = super().stop()
        result["broker_exit_status"] = self._broker.stop()
        return result

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "broker": f"mosquitto on {self._broker.url} (config {self._broker.config_path})",
                "environment": "EDGED_E2E__CLOCK_POLICY=trust-system-clock EDGED_TELEMETRY__ENABLED=true",
                "clients": f"{MQTT_CLIENT} (prefix {MQTT_PREFIX}) over MQTT; {SOCKET_CLIENT} (prefix local) "
                           "for sealed requests on the socket"}
