"""One HTTP exchange as a handler sees it: the request read whole, and a way to stream the answer."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

import h11


@dataclass
class HttpRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]      # names lower-case; a repeated header joined with ", "
    body: bytes
    sock: socket.socket | None
    peername: Any
    state: dict[str, Any] = field(default_factory=dict)  # what the guard learnt (the caller)
    _exchange: "Exchange | None" = None

    async def start_stream(self, status: int, headers: dict[str, str]) -> None:
        """Send the head of a response whose body follows in `write` calls (chunked on HTTP/1.1)."""
        assert self._exchange is not None
        await self._exchange.send(h11.Response(status_code=status, headers=encode_headers(headers)))

    async def write(self, data: bytes) -> None:
        assert self._exchange is not None
        await self._exchange.send(h11.Data(data=data))

    @property
    def streaming(self) -> bool:
        return self._exchange is not None and self._exchange.started


def encode_headers(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class Exchange:
    """Writes one response through h11; `started` once its head is on the wire."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self._conn = conn
        self._writer = writer
        self.started = False

    async def send(self, event: h11.Event) -> None:
        data = self._conn.send(event)
        if isinstance(event, h11.Response):
            self.started = True
        if data:
            self._writer.write(data)
            await self._writer.drain()


def http_request_of(head: h11.Request, body: bytes, sock: socket.socket | None, peername: Any) -> HttpRequest:
    target = head.target.decode("latin-1")
    path, _, query = target.partition("?")
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return HttpRequest(method=head.method.decode("latin-1"), path=path, query=query, headers=headers, body=body,
                       sock=sock, peername=peername)
