"""The HTTP/1.1 server under the API, over real Unix sockets with hand-written (and hostile) bytes."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from edged.transports.http.errors import Response, error_response, json_response
from edged.transports.http.request import HttpRequest
from edged.transports.http.server import MAX_HEAD_BYTES, MAX_PIPELINED_BYTES, HttpServer

LIMIT = 4096


class Recorder:
    def __init__(self) -> None:
        self.seen: list[HttpRequest] = []
        self.cancelled = asyncio.Event()
        self.release = asyncio.Event()

    async def handle(self, request: HttpRequest) -> Response | None:
        self.seen.append(request)
        if request.path == "/hang":
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if request.path == "/boom":
            raise RuntimeError("a bug in a handler")
        if request.path == "/stream":
            await request.start_stream(200, {"Content-Type": "text/plain"})
            for word in (b"one ", b"two ", b"three"):
                await request.write(word)
            return None
        return json_response({"path": request.path, "method": request.method, "body": len(request.body),
                              "query": request.query})


@asynccontextmanager
async def serving(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[Recorder, Path, HttpServer]]:
    recorder = Recorder()
    path = tmp_path / "http.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    server = HttpServer(recorder.handle, max_body_bytes=LIMIT, **options)
    await server.serve(listener)
    try:
        yield recorder, path, server
    finally:
        recorder.release.set()
        await server.close(timeout_s=1.0)


async def exchange(path: Path, data: bytes, *, close_write: bool = False) -> bytes:
    """Send raw bytes, read until the server closes the connection (bounded)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(data)
    await writer.drain()
    if close_write:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


def responses(raw: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of Content-Length responses into (status, headers, body)."""
    out = []
    while raw:
        head, _, raw = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 100:
            out.append((status, headers, b""))
            continue
        size = int(headers.get("content-length", "0"))
        out.append((status, headers, raw[:size]))
        raw = raw[size:]
    return out


def run(tmp_path: Path, check: Callable[[Recorder, Path, HttpServer], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with serving(tmp_path, **options) as (recorder, path, server):
            await check(recorder, path, server)
    asyncio.run(main())


GET = b"GET /a?x=1 HTTP/1.1\r\nHost: edged\r\n\r\n"
CLOSE = b"GET /last HTTP/1.1\r\nHost: edged\r\nConnection: close\r\n\r\n"


def test_keep_alive_and_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        raw = await exchange(path, GET + b"POST /b HTTP/1.1\r\nHost: e\r\nContent-Length: 3\r\n\r\nabc" + CLOSE)
        got = responses(raw)
        assert [status for status, _, _ in got] == [200, 200, 200]
        assert [json.loads(body)["path"] for _, _, body in got] == ["/a", "/b", "/last"]
        assert json.loads(got[0][2])["query"] == "x=1" and json.loads(got[1][2])["body"] == 3
    run(tmp_path, check)


def test_http_1_0_is_answered_and_closed(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        got = responses(await exchange(path, b"GET /old HTTP/1.0\r\n\r\n"))
        assert got[0][0] == 200 and json.loads(got[0][2])["path"] == "/old"
    run(tmp_path, check)


def test_garbage_and_malformed_requests_get_400_in_openai_shape(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        for junk in (b"\x00\xff\xfe garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                     b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"):
            (status, headers, body), *_ = responses(await exchange(path, junk))
            assert status == 400, junk
            assert headers["connection"] == "close"
            assert json.loads(body)["error"]["code"] == "bad_request"
        assert recorder.seen == []  # no handler saw any of it
        assert responses(await exchange(path, CLOSE))[0][0] == 200  # and the server carries on
    run(tmp_path, check)


def test_oversized_head_and_bodies_are_413_before_the_body_is_read(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        huge_head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Junk: " + b"j" * (MAX_HEAD_BYTES + 1) + b"\r\n\r\n"
        assert responses(await exchange(path, huge_head))[0][0] == 413
        # declared too large: refused on the head alone (the client never sends the body)
        declared = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (LIMIT + 1)
        (status, _, body), = responses(await exchange(path, declared))
        assert status == 413 and "more than the limit" in json.loads(body)["error"]["message"]
        # chunked, growing past the limit
        chunk = b"%x\r\n%s\r\n" % (1024, b"c" * 1024)
        chunked = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 5 + b"0\r\n\r\n"
        assert responses(await exchange(path, chunked))[0][0] == 413
        assert recorder.seen == []
    run(tmp_path, check)


def test_expect_100_continue_gets_the_go_ahead(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n"
                     b"Connection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100 ")
        writer.write(b"hello")
        (status, _, body), = responses(await asyncio.wait_for(reader.read(), 10))
        writer.close()
        assert status == 200 and json.loads(body)["body"] == 5
    run(tmp_path, check)


def test_truncated_requests_are_dropped_and_the_server_carries_on(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        for cut in (b"GET / HT", b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"):
            (status, _, body), = responses(await exchange(path, cut, close_write=True))  # half-closed: told why
            assert status == 400 and "malformed" in json.loads(body)["error"]["message"]
            reader, writer = await asyncio.open_unix_connection(str(path))  # or gone for good
            writer.write(cut)
            writer.close()
        assert recorder.seen == []
        assert responses(await exchange(path, CLOSE))[0][0] == 200
    run(tmp_path, check)


def test_a_slow_head_is_cut_and_an_idle_connection_closed(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET / HTTP/1.1\r\n")  # and never the rest: the server gives up on it
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        reader, writer = await asyncio.open_unix_connection(str(path))  # idle: closed quietly
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        assert recorder.seen == []
    run(tmp_path, check, head_timeout_s=0.3, keepalive_timeout_s=0.3)


def test_hanging_up_cancels_the_handler(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        await writer.drain()
        while not recorder.seen:
            await asyncio.sleep(0.01)
        writer.close()
        await asyncio.wait_for(recorder.cancelled.wait(), 10)
        assert responses(await exchange(path, CLOSE))[0][0] == 200
    run(tmp_path, check)


def test_a_pipelining_flood_while_a_handler_runs_closes_the_connection(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n" + b"x" * (MAX_PIPELINED_BYTES + 1024))
        await writer.drain()
        await asyncio.wait_for(recorder.cancelled.wait(), 10)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    run(tmp_path, check)


def test_a_failing_handler_is_500_and_the_connection_ends(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        (status, headers, body), = responses(await exchange(path, b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n"))
        assert status == 500 and json.loads(body)["error"]["code"] == "internal"
        assert "a bug" not in body.decode()  # details stay in the device's log
        assert responses(await exchange(path, CLOSE))[0][0] == 200
    run(tmp_path, check)


def test_streamed_bodies_are_chunked_and_head_has_no_body(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        raw = await exchange(path, b"GET /stream HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"
        raw = await exchange(path, b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"content-length: " in head.lower() and body == b""
    run(tmp_path, check)


def test_connections_over_the_cap_are_told_busy(tmp_path: Path) -> None:
    async def check(recorder: Recorder, path: Path, server: HttpServer) -> None:
        held = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
        for _, writer in held:
            writer.write(b"GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
        while len(recorder.seen) < 2:
            await asyncio.sleep(0.01)
        (status, headers, body), = responses(await exchange(path, GET))
        assert status == 429 and headers["retry-after"] and json.loads(body)["error"]["code"] == "busy"
        for _, writer in held:
            writer.close()
        await asyncio.wait_for(recorder.cancelled.wait(), 10)
    run(tmp_path, check, max_connections=2)


def test_error_response_closes_when_asked() -> None:
    assert error_response("too_large", "x", close=True).headers["Connection"] == "close"
    assert "Connection" not in error_response("bad_request", "x").headers
