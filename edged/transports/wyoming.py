"""The Wyoming handle server: a voice pipeline's `transcript` in, `handled` (streamed) out, through the one core.

Home Assistant's voice pipeline connects, sends `describe` (answered with `info`) or a `transcript`.
A transcript becomes an interactive ChatRequest with the configured system prompt; the answer goes
back as `handled-start`, `handled-chunk`s as tokens come, the final `handled` with the whole text
(all that Home Assistant reads today) and `handled-stop`. A refused or failed request is a
`not-handled` whose text says why. One task reads each connection the whole time, so a peer that
hangs up cancels its generation at the next token.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Callable

import structlog
from pydantic import ValidationError
from wyoming.asr import Transcript
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.handle import Handled, HandledChunk, HandledStart, HandledStop, NotHandled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler

from edged.config import WyomingConfig
from edged.errors import BadRequest, IdleConnection, RequestError, TransportError
from edged.job import Job
from edged.messages import ChatMessage, ChatRequest, ErrorEvent, FinalEvent, TokenEvent
from edged.messages import Event as CoreEvent
from edged.ports import CorePort
from edged.transports.socket_file import bind_unix_socket
from edged.transports.peer import peer_of_socket
from edged.transports.relay import answer_unless_hung_up
from edged.transports.wyoming_uri import parse_wyoming_uri
from edged.transports.wyoming_wire import MAX_HEADER_BYTES, ModelFacts, info_event, read_event, transcript_text

logger = structlog.get_logger(__name__)

# Streamed transcripts end with a plain `transcript` (the one answered); their pieces need no reply.
IGNORED = frozenset({"transcript-start", "transcript-chunk", "transcript-stop", "pong"})
REFUSED_LINGER_S = 2.0  # how long a connection over the limit may take to read its refusal and hang up
REFUSED_READ_BYTES = 64 * 1024
WAITING_EVENTS = 4  # events queued behind a running answer; a peer sending more is not a voice pipeline
# A connection that completes no event for this long while nothing is being answered is closed: idle or
# half-sent ones would otherwise hold the few connection slots (max_connections) against Home Assistant.
IDLE_TIMEOUT_S = 60.0


def _peer_label(writer: asyncio.StreamWriter) -> str:
    sock: socket.socket = writer.get_extra_info("socket")
    if sock.family == socket.AF_UNIX:
        peer = peer_of_socket(sock)
        return f"uid={peer.uid},gid={peer.gid}"  # no pid: the core's per-client rate limit must not reset per process
    host = (writer.get_extra_info("peername") or ("?",))[0]
    return f"tcp:{host}"  # no port: a new connection is the same client


class WyomingConnection(AsyncEventHandler):
    """One peer. `run` reads in its own task (a hang-up is seen during an answer); events run in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, core: CorePort,
                 settings: WyomingConfig, describe_model: Callable[[], ModelFacts]) -> None:
        super().__init__(reader, writer)
        self._core = core
        self._settings = settings
        self._describe_model = describe_model
        self.peer = _peer_label(writer)
        self._events: asyncio.Queue[Event | BadRequest | None] = asyncio.Queue(maxsize=WAITING_EVENTS)
        self._closed = asyncio.Event()
        self._answering = False
        self._quiet_since = asyncio.get_running_loop().time()

    async def run(self) -> None:
        reading = asyncio.create_task(self._read_forever(), name="wyoming-read")
        try:
            while True:
                event = await self._events.get()
                if event is None:
                    return
                if isinstance(event, BadRequest):
                    await self.write_event(Error(text=event.message, code=event.code).event())
                    return
                self._answering = True
                try:
                    if not await self.handle_event(event):
                        return
                finally:
                    self._answering = False
                    self._quiet_since = asyncio.get_running_loop().time()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            self.writer.close()

    async def _read_forever(self) -> None:
        outcome: BadRequest | None = None
        try:
            while True:
                event = await self._next_event()
                if event is None:
                    break
                if event.type in IGNORED:
                    continue
                try:
                    self._events.put_nowait(event)
                except asyncio.QueueFull:
                    outcome = BadRequest(f"more than {WAITING_EVENTS} events sent while an answer was running")
                    break
        except BadRequest as exc:
            outcome = exc
        except IdleConnection:
            logger.info("wyoming connection closed: idle", peer=self.peer, idle_s=IDLE_TIMEOUT_S)
        except (ConnectionError, OSError):
            pass
        finally:
            self._closed.set()
            while True:  # make room: the end (or the reason) must reach the serving loop
                try:
                    self._events.put_nowait(outcome)
                    break
                except asyncio.QueueFull:
                    self._events.get_nowait()

    async def _next_event(self) -> Event | None:
        """read_event, unless the peer completes no event for IDLE_TIMEOUT_S while nothing is answered."""
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(read_event(self.reader))
        try:
            while True:
                left = self._quiet_since + IDLE_TIMEOUT_S - loop.time()
                done, _ = await asyncio.wait({reading}, timeout=IDLE_TIMEOUT_S if self._answering else max(left, 0.0))
                if done:
                    self._quiet_since = loop.time()
                    return reading.result()
                if not self._answering and loop.time() - self._quiet_since >= IDLE_TIMEOUT_S:
                    raise IdleConnection("no event within the idle timeout")
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(info_event(self._describe_model(), self._settings.languages,
                                              self._settings.streaming))
        elif Transcript.is_type(event.type):
            await self._answer(event)
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=event.data.get("text")).event())
        else:
            logger.debug("wyoming event ignored", type=event.type, peer=self.peer)
        return True

    def _request(self, event: Event) -> ChatRequest:
        messages = [ChatMessage(role="user", content=transcript_text(event))]
        if self._settings.system_prompt:
            messages.insert(0, ChatMessage(role="system", content=self._settings.system_prompt))
        try:
            return ChatRequest(messages=messages, max_tokens=self._settings.max_tokens,
                               stream=self._settings.streaming, priority="interactive")
        except ValidationError as exc:
            raise BadRequest(f"transcript: {exc.errors()[0]['msg']}") from None

    async def _answer(self, event: Event) -> None:
        context = event.data.get("context") if isinstance(event.data.get("context"), dict) else None
        try:
            job = self._core.submit(self._request(event), transport="wyoming", peer=self.peer)
        except RequestError as exc:
            await self.write_event(NotHandled(text=exc.message, context=context).event())
            return
        await answer_unless_hung_up(job, self._closed, self._reply(job, context), "wyoming")

    async def _reply(self, job: Job, context: dict[str, Any] | None) -> None:
        streaming = self._settings.streaming
        if streaming:
            await self.write_event(HandledStart(context=context).event())
        pieces: list[str] = []
        events = job.events
        item: CoreEvent | None = await events.get()
        while isinstance(item, TokenEvent):
            text, item = item.text, None
            while not events.empty():  # tokens that queued during the last write go out as one chunk
                item = events.get_nowait()
                if not isinstance(item, TokenEvent):
                    break
                text, item = text + item.text, None
            pieces.append(text)
            await self.write_event(HandledChunk(text=text).event())
            if item is None:
                item = await events.get()
        if isinstance(item, FinalEvent):
            answer = ("".join(pieces) if streaming else item.text).strip()
            await self.write_event(Handled(text=answer, context=context).event())
        elif isinstance(item, ErrorEvent):
            await self.write_event(NotHandled(text=_spoken_error(item), context=context).event())
        if streaming:
            await self.write_event(HandledStop().event())


async def _drop_until_hang_up(reader: asyncio.StreamReader, limit: int) -> None:
    dropped = 0
    while dropped <= limit:
        data = await reader.read(4096)
        if not data:
            return
        dropped += len(data)


def _spoken_error(event: ErrorEvent) -> str:
    return f"{event.message} ({event.code})"


class WyomingTransport:
    def __init__(self, settings: WyomingConfig, core: CorePort, describe_model: Callable[[], ModelFacts]) -> None:
        assert settings.uri is not None
        self._settings = settings
        self.address = parse_wyoming_uri(settings.uri, allow_remote=settings.allow_remote)
        self._core = core
        self._describe_model = describe_model
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._refusing: set[asyncio.Task[None]] = set()  # connections over the limit, told so and closing

    async def start(self) -> None:
        try:
            if self.address.path is not None:
                sock = bind_unix_socket(self.address.path, self._settings.mode)
                self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=MAX_HEADER_BYTES)
            else:
                self._server = await asyncio.start_server(self._accept, self.address.host, self.address.port,
                                                          limit=MAX_HEADER_BYTES)
        except OSError as exc:
            raise TransportError(f"cannot serve Wyoming on {self.address}: {exc.strerror or exc}; "
                                 "is another server on it? change [wyoming] uri") from None
        logger.info("listening", transport="wyoming", uri=str(self.address),
                    streaming=self._settings.streaming)

    async def close(self) -> None:
        """Stop listening, then end every connection (their generations are cancelled)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            if self.address.path is not None:
                self.address.path.unlink(missing_ok=True)
        ending = [*self._connections, *self._refusing]
        for task in ending:
            task.cancel()
        await asyncio.gather(*ending, return_exceptions=True)

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The error for any client, and a not-handled that a pipeline waiting for its answer speaks.

        What the client sent is read and dropped until it hangs up (bounded): closing with unread data
        resets the connection, and the client could lose the reason or fail at its own close.
        """
        why = f"too many voice connections (at most {self._settings.max_connections}); retry later"
        try:
            await async_write_event(Error(text=why, code="busy").event(), writer)
            await async_write_event(NotHandled(text=why).event(), writer)
            if len(self._refusing) <= self._settings.max_connections:  # a flood is closed at once
                if writer.can_write_eof():
                    writer.write_eof()
                await asyncio.wait_for(_drop_until_hang_up(reader, REFUSED_READ_BYTES), REFUSED_LINGER_S)
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self._settings.max_connections:
            self._refusing.add(task)
            try:
                await self._refuse(reader, writer)
            finally:
                self._refusing.discard(task)
            return
        self._connections.add(task)
        try:
            connection = WyomingConnection(reader, writer, core=self._core, settings=self._settings,
                                           describe_model=self._describe_model)
            await connection.run()
        except (ConnectionError, asyncio.IncompleteReadError):
            logger.debug("wyoming connection lost")
        except asyncio.CancelledError:
            pass
        except Exception:  # one broken connection must never take the daemon down
            logger.exception("wyoming connection failed")
        finally:
            self._connections.discard(task)
            writer.close()
