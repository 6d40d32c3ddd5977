"""Server-sent events for streamed completions: `data: <json>` per chunk, `data: [DONE]` at the end."""

from __future__ import annotations

import json
from typing import Any

from edged.transports.http.request import HttpRequest

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def encode_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class SseStream:
    """Opens the response at the first event, so an error before any token still gets its HTTP status."""

    def __init__(self, request: HttpRequest) -> None:
        self._request = request

    @property
    def started(self) -> bool:
        return self._request.streaming

    async def send(self, obj: dict[str, Any]) -> None:
        if not self._request.streaming:
            await self._request.start_stream(200, HEADERS)
        await self._request.write(encode_event(obj))

    async def finish(self) -> None:
        """The last event; the server ends the chunked body when the handler returns."""
        await self._request.write(DONE)
