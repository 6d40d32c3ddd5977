"""HTTP/1.1 over asyncio streams, with h11 speaking the protocol: one exchange at a time per connection.

h11 (python-hyper; the parser under uvicorn and httpcore) does the framing: request line, headers,
Content-Length and chunked bodies, keep-alive, HTTP/1.0, `Expect: 100-continue`, and it refuses
what does not parse. What is ours is the edge-device policy around it: bounded heads and bodies (413
before the body is read), timeouts for a slow or idle client, a connection cap, and one rule that
makes a hang-up cheap: while a handler runs, the connection is still read, and end of file cancels
the handler, so a generation stops at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import h11
import structlog

from edged.errors import BadRequest, RequestError, TooLarge
from edged.ratelog import RejectSummary
from edged.transports.http.errors import Response, error_response
from edged.transports.http.request import Exchange, HttpRequest, encode_headers, http_request_of

logger = structlog.get_logger(__name__)

MAX_HEAD_BYTES = 16 * 1024       # request line and headers; OpenAI SDKs send well under 2 KiB
HEAD_TIMEOUT_S = 30.0            # from a request's first byte to the end of its body
KEEPALIVE_TIMEOUT_S = 75.0       # idle between two requests on one connection (nginx's default is 75 s too)
MAX_CONNECTIONS = 128            # every open connection holds a task and buffers
READ_CHUNK = 64 * 1024
MAX_PIPELINED_BYTES = 64 * 1024  # read ahead while a handler runs; more is abuse, and the connection closes
LINGER_S = 1.0                   # after an error answer: how long the rest of a refused request is read away
LINGER_READS = 16


Handler = Callable[[HttpRequest], Coroutine[Any, Any, Response | None]]


class HttpServer:
    def __init__(self, handler: Handler, *, max_body_bytes: int, head_timeout_s: float = HEAD_TIMEOUT_S,
                 keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S, max_connections: int = MAX_CONNECTIONS) -> None:
        self._handler = handler
        self._max_body = max_body_bytes
        self._head_timeout = head_timeout_s
        self._keepalive_timeout = keepalive_timeout_s
        self._max_connections = max_connections
        self._servers: list[asyncio.Server] = []
        self.rejected = RejectSummary("http requests refused before a handler", logger)
        self._connections: set[asyncio.Task[None]] = set()

    async def serve(self, sock: socket.socket, ssl_context: Any = None) -> None:
        """Take over a bound, listening socket (Unix or TCP, optionally TLS)."""
        if sock.family == socket.AF_UNIX:
            server = await asyncio.start_unix_server(self._connected, sock=sock)
        else:
            server = await asyncio.start_server(self._connected, sock=sock, ssl=ssl_context)
        self._servers.append(server)

    def stop_listening(self) -> None:
        for server in self._servers:
            server.close()  # no new connections; the open ones finish their exchange
        self._servers.clear()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Give open connections `timeout_s` to finish, then cut them."""
        self.stop_listening()
        if self._connections:
            _, pending = await asyncio.wait(set(self._connections), timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    # ---- one connection --------------------------------------------------------------------
    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            if len(self._connections) > self._max_connections:
                await self._refuse(reader, writer)
                return
            await self._exchanges(h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES), reader, writer)
        except (ConnectionError, TimeoutError, h11.LocalProtocolError):
            pass  # the client went away or stalled: nothing to answer
        except Exception:
            logger.exception("http connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.rejected.note("too_many_connections", limit=self._max_connections)
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: edged\r\n\r\n")  # h11 answers only a request it has seen
        conn.next_event()
        await self._send_whole(conn, writer, error_response("busy", "too many open HTTP connections; retry shortly",
                                                            close=True))
        await _linger(reader, writer)

    async def _exchanges(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                request = await self._read_request(conn, reader, writer)
            except h11.RemoteProtocolError as exc:
                code = "too_large" if exc.error_status_hint == 431 else "bad_request"
                self.rejected.note(code, reason=str(exc))
                if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                    await self._send_whole(conn, writer, error_response(code, f"malformed HTTP request: {exc}",
                                                                        close=True))
                    await _linger(reader, writer)
                return
            except RequestError as exc:  # read far enough to answer, and no further
                self.rejected.note(exc.code, reason=exc.message)
                await self._send_whole(conn, writer, error_response(exc.code, exc.message, close=True))
                await _linger(reader, writer)
                return
            if request is None:
                return
            if not await self._run(conn, reader, writer, request):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # HTTP/1.0, Connection: close, or a body we did not read
            conn.start_next_cycle()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> HttpRequest | None:
        loop = asyncio.get_running_loop()
        head: h11.Request | None = None
        body = bytearray()
        deadline: float | None = None  # set by a request's first byte: a slow client gets HEAD_TIMEOUT_S in all
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                if deadline is None and (head is not None or conn.trailing_data[0]):
                    deadline = loop.time() + self._head_timeout
                timeout = self._keepalive_timeout if deadline is None else max(0.0, deadline - loop.time())
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    if deadline is None:
                        return None  # an idle keep-alive connection: close it quietly
                    raise
                conn.receive_data(data)  # a partial head stays in h11's buffer: the deadline starts next round
            elif isinstance(event, h11.Request):
                head = event
                if event.http_version not in (b"1.0", b"1.1"):
                    raise BadRequest(f"HTTP/{event.http_version.decode('latin-1')} is not served; use HTTP/1.1")
                self._check_sizes(event)
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self._max_body:
                    raise TooLarge(self._too_large_message(len(body)))
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return http_request_of(head, bytes(body), writer.get_extra_info("socket"),
                                     writer.get_extra_info("peername"))
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    def _check_sizes(self, head: h11.Request) -> None:
        # h11 bounds only a head still incomplete; one that arrived whole in a read is measured here
        size = len(head.target) + sum(len(name) + len(value) + 4 for name, value in head.headers)
        if size > MAX_HEAD_BYTES:
            raise TooLarge(f"request head too large: {size} bytes is more than {MAX_HEAD_BYTES}")
        for name, value in head.headers:
            if name == b"content-length" and int(value) > self._max_body:
                raise TooLarge(self._too_large_message(int(value)))

    def _too_large_message(self, size: int) -> str:
        return f"request body too large: {size} bytes is more than the limit of {self._max_body} (socket.max_frame_bytes)"

    async def _run(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: HttpRequest) -> bool:
        """Run the handler while watching for a hang-up; False when the connection is done for."""
        exchange = request._exchange = Exchange(conn, writer)
        handling = asyncio.create_task(self._handler(request), name="http-handler")
        watching = asyncio.create_task(self._watch_hangup(conn, reader, handling), name="http-hangup")
        try:
            response = await handling
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]  # the server is closing
                raise
            return False  # the client hung up; the handler has cleaned up after itself
        except (ConnectionError, h11.LocalProtocolError):
            return False  # a write to a client that went away
        except Exception:
            logger.exception("http handler failed", path=request.path)
            response = error_response("internal", "internal error; the device's log has the details", close=True)
            if exchange.started:
                return False
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        if watching.done() and not watching.cancelled():
            return False  # it saw the hang-up just as the handler finished
        if response is not None and not exchange.started:
            await self._send_whole(conn, writer, response, head_only=request.method == "HEAD")
        elif exchange.started:
            await exchange.send(h11.EndOfMessage())
        return True

    async def _watch_hangup(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            handling: asyncio.Task[Response | None]) -> None:
        """Returns (after cancelling the handler) when the client hangs up or reads too far ahead."""
        read_ahead = len(conn.trailing_data[0])  # what came with the request is read ahead too
        while read_ahead <= MAX_PIPELINED_BYTES:
            data = await reader.read(READ_CHUNK)
            if not data:
                break
            read_ahead += len(data)
            conn.receive_data(data)  # a pipelined request: h11 keeps it for the next cycle
        handling.cancel()

    async def _send_whole(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response, *,
                          head_only: bool = False) -> None:
        headers = {**response.headers, "Content-Length": str(len(response.body))}
        exchange = Exchange(conn, writer)
        await exchange.send(h11.Response(status_code=response.status, headers=encode_headers(headers)))
        if response.body and not head_only:
            await exchange.send(h11.Data(data=response.body))
        await exchange.send(h11.EndOfMessage())


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Close our side and read what the client still sends, briefly: closing a socket with unread
    data resets the connection, and the reset can destroy the answer before the client reads it."""
    if not writer.can_write_eof():
        return  # TLS: close_notify does this job
    writer.write_eof()
    with contextlib.suppress(ConnectionError, TimeoutError):
        async with asyncio.timeout(LINGER_S):
            for _ in range(LINGER_READS):
                if not await reader.read(READ_CHUNK):
                    return
