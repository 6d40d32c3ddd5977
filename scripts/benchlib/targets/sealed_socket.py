"""Sealed (e2e-v1) requests over a daemon's Unix socket, sent the way `edged ask --sealed` sends them.

The prekey is fetched once and kept, as a real client would (prekeys rotate every 12 hours by
default, far beyond a benchmark run); the clock starts before the request is sealed, so the
client-side sealing is part of the measured time to first token.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edged.clients.socket import SocketClient
from edged.crypto.client import SealedRequest
from edged.crypto.keys import load_private_key_file

from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.targets.edged_socket import REQUEST_TIMEOUT_S, chat_body, sample_from_events

LOCAL_TOPIC = "local"   # request and response "topic" of a sealed request on the Unix socket


class SealedSocketClient:
    def __init__(self, socket_path: Path, client_key_file: Path, identity: bytes) -> None:
        self._socket = socket_path
        self._key = load_private_key_file(client_key_file)
        self._identity = identity       # pinned: fetch_prekey refuses a daemon with another identity key
        self._prekey: Any = None

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str, priority: str | None = None) -> RequestSample:
        with SocketClient(self._socket, timeout=REQUEST_TIMEOUT_S) as client:
            if self._prekey is None:
                self._prekey, _ = client.fetch_prekey(device_identity=self._identity)
            body = json.dumps(chat_body(messages, max_tokens, priority)).encode()
            sent = time.perf_counter()
            sealed = SealedRequest.build(client_key=self._key, prekey=self._prekey, identity_pub=self._identity,
                                         request_topic=LOCAL_TOPIC, resp_topic=LOCAL_TOPIC, body=body)
            sample = sample_from_events(prompt_id, client.ask_sealed(sealed.data, sealed.opener), sent)
        sample.token_source = "usage (sealed)"
        return sample
