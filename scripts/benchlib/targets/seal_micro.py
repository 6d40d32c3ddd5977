"""e2e-v1 sealing in the benchmark process: the keys and the device-side gateway, no model, no transport.

The device side is a real SealedGateway (identity, PrekeyRing, AllowList, ReplayCache) in a state
directory provisioned with the real `edged keys` commands, so the seal-cost scenario times exactly the
code the daemon runs on every sealed request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import structlog

from benchlib.prompts import Messages
from benchlib.provision import DeviceKeys, provision
from benchlib.samples import RequestSample
from benchlib.targets.base import SEAL_MICRO, StartupInfo, Target

DEVICE_ID = "bench"
CLIENT, PREFIX = "bench", "edged/clients/bench"


class SealMicroTarget(Target):
    name = "seal-cost"
    label = "e2e-v1 sealing (in-process)"
    capabilities = frozenset({SEAL_MICRO})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: DeviceKeys | None = None
        self.gateway: Any = None
        self.client_key: Any = None

    def start(self) -> StartupInfo:
        # The gateway logs the identity through structlog; keep the benchmark's stdout for the results.
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
        from edged.crypto.gateway import SealedGateway  # noqa: PLC0415
        from edged.crypto.keys import load_private_key_file  # noqa: PLC0415
        from edged.crypto.settings import E2ESettings  # noqa: PLC0415

        started = time.perf_counter()
        directory = self.context.run_dir / self.name
        self.keys = provision(directory / "state", directory / "client-keys", {CLIENT: PREFIX})
        # trust-system-clock: this machine's kernel may report an unsynchronised clock; with the default
        # policy the gateway would refuse every MQTT-topic request before the cryptography we time.
        self.gateway = SealedGateway(E2ESettings(clock_policy="trust-system-clock"), self.keys.state_dir, DEVICE_ID)
        if self.gateway.identity.public_bytes != self.keys.identity:
            raise RuntimeError("the gateway's identity key differs from the one `edged keys show` printed")
        self.client_key = load_private_key_file(self.keys.clients[CLIENT].key_file)
        return StartupInfo(ready_s=time.perf_counter() - started)

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        raise NotImplementedError("the sealing micro-benchmark has no model")

    def stop(self) -> dict[str, Any]:
        self.gateway = None
        return {}

    def describe(self) -> dict[str, Any]:
        return {"note": "edged.crypto.gateway.SealedGateway and edged.crypto.client.SealedRequest in the benchmark "
                        "process; keys made with `edged keys init`, `client-new`, `allow add`"}
