"""edged's OpenAI-compatible HTTP API: the same daemon as the socket target, asked over http.sock with SSE.

The client is the standard library's http.client on an AF_UNIX socket, so the measurement shows what
the daemon's HTTP side adds, not what a heavy client library costs. As with the frame socket, the
connection is made before the clock starts; the request, the headers, the SSE parsing and the
closing `data: [DONE]` are all inside the measured time.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.targets.base import CHAT, PROCESS, SERVER
from benchlib.targets.edged_socket import REQUEST_TIMEOUT_S, EdgedSocketTarget, chat_body, sample_from_events

HTTP_API = "http-api"   # edged's daemon with the HTTP API on http.sock next to its frame socket


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("edged", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self._path))


def sse_events(response: http.client.HTTPResponse) -> Iterator[dict[str, Any]]:
    for raw in response:
        line = raw.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: "):]
        if data == b"[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"edged's HTTP stream ended with an error: {event['error']}")
        yield event
    raise RuntimeError("edged's HTTP stream ended without data: [DONE]")


class EdgedHttpTarget(EdgedSocketTarget):
    name = "edged-http"
    label = "edged (HTTP, Unix socket)"
    capabilities = frozenset({CHAT, PROCESS, SERVER, HTTP_API})

    @property
    def http_socket(self) -> Path:
        return self.socket_path.parent / "http.sock"

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        return self.http_chat(messages, max_tokens, prompt_id)

    def http_chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        body = json.dumps(chat_body(messages, max_tokens)).encode()
        connection = UnixHTTPConnection(self.http_socket, REQUEST_TIMEOUT_S)
        try:
            connection.connect()
            sent = time.perf_counter()
            connection.request("POST", "/v1/chat/completions", body=body,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            if response.status != 200:
                raise RuntimeError(f"edged's HTTP API answered {response.status}: {response.read()[:300]!r}")
            sample = sample_from_events(prompt_id, sse_events(response), sent)
        finally:
            connection.close()
        sample.token_source = "usage (HTTP)"
        return sample

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "http_socket": str(self.http_socket),
                "client": "http.client on AF_UNIX, SSE parsed line by line"}
