"""Server-sent events for streamed completions: `data: <json>` per chunk, `data: [DONE]` at the end."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def encode_event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


class SseStream:
    """Opens the response at the first event, so an error before any token still gets its HTTP status."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response: web.StreamResponse | None = None

    @property
    def started(self) -> bool:
        return self.response is not None

    async def send(self, obj: dict[str, Any]) -> None:
        if self.response is None:
            self.response = web.StreamResponse(status=200, headers=HEADERS)
            await self.response.prepare(self._request)
        await self.response.write(encode_event(obj))

    async def finish(self) -> web.StreamResponse:
        assert self.response is not None
        await self.response.write(DONE)
        await self.response.write_eof()
        return self.response
