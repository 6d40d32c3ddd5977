"""The Unix socket transport: e2e-v1 §6 frames in, events or sealed chunks out, one request per connection at a time."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import structlog

from edged.errors import BadRequest, Busy, IdleConnection, RequestError, Unauthorized
from edged.messages import parse_request
from edged.paths import check_socket_dir
from edged.transports import framing
from edged.transports.framing import (KIND_CONTROL, KIND_JSON, KIND_SEALED, encode_frame, encode_json,
                                      parse_json_object, read_frame)
from edged.transports.peer import Peer, peer_of_socket, plaintext_allowed
from edged.job import Job
from edged.ports import CorePort, GatewayPort
from edged.transports.relay import Send, answer_unless_hung_up, relay_events
from edged.topics import LOCAL_TOPIC
from edged.transports.socket_file import remove_stale_socket

logger = structlog.get_logger(__name__)

DEFAULT_MAX_CONNECTIONS_PER_UID = 8  # one local user cannot take every slot


class LocalControl(Protocol):
    """What the socket's control ops ask of the device (``control.DeviceControl``)."""

    def status(self) -> dict[str, Any]: ...
    def override_profile(self, name: str, source: str) -> dict[str, Any]: ...
    def prekey_reply(self) -> dict[str, str]: ...
    def model_name(self) -> str: ...


def _peer_of(writer: asyncio.StreamWriter) -> Peer:
    return peer_of_socket(writer.get_extra_info("socket"))


class UnixSocketTransport:
    def __init__(self, path: Path, core: CorePort, *, mode: int, max_frame: int, max_connections: int,
                 plaintext_uids: set[int], plaintext_gids: set[int], control: LocalControl,
                 sealed: GatewayPort | None = None,
                 max_connections_per_uid: int = DEFAULT_MAX_CONNECTIONS_PER_UID) -> None:
        self.path = path
        self._core = core
        self._mode = mode
        self._max_frame = max_frame
        self._max_connections = max_connections
        self._plaintext_uids = plaintext_uids
        self._plaintext_gids = plaintext_gids
        self.control = control
        self._ops: dict[str, Callable[[dict[str, Any], Peer], dict[str, Any]]] = {
            "status": self._op_status, "profile": self._op_profile, "prekey": self._op_prekey}
        self.sealed = sealed
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._max_per_uid = max_connections_per_uid
        self._per_uid: dict[int, int] = {}
        self._exempt_uids = {0, os.geteuid()}  # root and the daemon's user always get a connection

    async def start(self) -> None:
        check_socket_dir(self.path, create=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_socket(self.path)
        old_umask = os.umask(0o777 & ~self._mode)  # the socket never exists with a wider mode, not even briefly
        try:
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self._mode)
        logger.info("listening", transport="unix", path=str(self.path), mode=oct(self._mode))

    async def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            self.path.unlink(missing_ok=True)

    async def close_connections(self) -> None:
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    def _refusal(self, peer: Peer) -> str | None:
        """Why this peer gets no connection now: the caps bind everyone but root and the daemon's user."""
        if peer.uid in self._exempt_uids:
            return None
        counted = sum(count for uid, count in self._per_uid.items() if uid not in self._exempt_uids)
        if counted >= self._max_connections:
            return "too many connections; retry later"
        if self._per_uid.get(peer.uid, 0) >= self._max_per_uid:
            return f"uid {peer.uid} already has {self._max_per_uid} connections open; close one and retry"
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        try:
            peer = _peer_of(writer)
        except OSError:
            writer.close()
            return
        refusal = self._refusal(peer)
        if refusal is not None:
            writer.write(encode_json(KIND_JSON, Busy(refusal).to_wire()))
            writer.close()
            return
        self._connections.add(task)
        self._per_uid[peer.uid] = self._per_uid.get(peer.uid, 0) + 1
        log = logger.bind(peer=str(peer))
        log.debug("connection opened")
        try:
            await self._serve(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            log.debug("connection lost")
        except asyncio.CancelledError:
            pass
        except Exception:  # one broken connection must never take the daemon down
            log.exception("connection failed")
        finally:
            self._connections.discard(task)
            self._per_uid[peer.uid] -= 1
            if not self._per_uid[peer.uid]:
                del self._per_uid[peer.uid]
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer) -> None:
        # One task owns the read side for the whole connection, so a frame or EOF that arrives while
        # a request streams is never half-consumed: EOF cancels the request, a next frame waits its turn.
        frames: asyncio.Queue[tuple[int, bytes] | BadRequest | None] = asyncio.Queue(maxsize=2)
        closed = asyncio.Event()
        busy = [False]  # a request is being answered: not idle, however long it takes
        reading = asyncio.create_task(self._read_frames(reader, frames, closed, lambda: busy[0]), name="unix-read")
        try:
            while True:
                busy[0] = False
                frame = await frames.get()
                busy[0] = True
                if frame is None:
                    return
                if isinstance(frame, BadRequest):
                    await self._send(writer, KIND_JSON, BadRequest(frame.message).to_wire())
                    return
                kind, payload = frame
                try:
                    if kind == KIND_CONTROL:
                        await self._control(writer, payload, peer)
                    elif kind == KIND_JSON:
                        await self._plaintext(writer, payload, peer, closed)
                    else:
                        await self._sealed(writer, payload, peer, closed)
                except RequestError as exc:
                    await self._send(writer, KIND_CONTROL if kind == KIND_CONTROL else KIND_JSON, exc.to_wire())
                    if isinstance(exc, BadRequest):
                        return  # spec §6: after a bad frame the connection is closed
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def _read_frames(self, reader: asyncio.StreamReader, frames: asyncio.Queue[Any],
                           closed: asyncio.Event, busy: Callable[[], bool]) -> None:
        try:
            while True:
                try:
                    frame = await read_frame(reader, self._max_frame, framing.FRAME_IDLE_TIMEOUT_S)
                except IdleConnection:
                    if busy() or not frames.empty():
                        continue  # a request is still running (or waiting): the client may speak later
                    return
                except BadRequest as exc:
                    await frames.put(exc)
                    return
                if frame is None:
                    return
                await frames.put(frame)
        except (ConnectionError, OSError):
            return
        finally:
            closed.set()
            try:
                frames.put_nowait(None)
            except asyncio.QueueFull:
                pass  # the serve loop sees `closed` when it next waits

    async def _send(self, writer: asyncio.StreamWriter, kind: int, obj: Any) -> None:
        writer.write(encode_json(kind, obj))
        await writer.drain()

    async def _control(self, writer: asyncio.StreamWriter, payload: bytes, peer: Peer) -> None:
        message = parse_json_object(payload, "control message")
        op = message.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise BadRequest(f"unknown control op {op!r}; known: {', '.join(sorted(self._ops))}")
        await self._send(writer, KIND_CONTROL, handler(message, peer))

    def _op_status(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return self.control.status()

    def _op_prekey(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return dict(self.control.prekey_reply())

    def _op_profile(self, message: dict[str, Any], peer: Peer) -> dict[str, Any]:
        name = message.get("set")
        if set(message) - {"op", "set"} or not isinstance(name, str):
            raise BadRequest('profile op takes {"op": "profile", "set": NAME}')
        if peer.uid not in (0, os.getuid()):
            raise Unauthorized("only root or the daemon's user may change the profile")
        return self.control.override_profile(name, "local")

    def _plaintext_allowed(self, peer: Peer) -> bool:
        return plaintext_allowed(peer, self._plaintext_uids, self._plaintext_gids)

    async def _plaintext(self, writer: asyncio.StreamWriter, payload: bytes, peer: Peer,
                         closed: asyncio.Event) -> None:
        if not self._plaintext_allowed(peer):
            raise Unauthorized(f"plaintext requests are not allowed for uid {peer.uid}; send a sealed request "
                               "(edged ask --sealed) or add the uid to socket.plaintext_uids")
        request = parse_request(payload)
        job = self._core.submit(request, transport="unix", peer=str(peer))

        async def send(obj: dict[str, Any], final: bool, error: bool) -> None:
            await self._send(writer, KIND_JSON, obj)

        await self._stream(closed, job, send)

    async def _sealed(self, writer: asyncio.StreamWriter, payload: bytes, peer: Peer,
                      closed: asyncio.Event) -> None:
        if self.sealed is None:
            raise Unauthorized("sealed requests are not enabled on this device")
        exchange = self.sealed.open(payload, LOCAL_TOPIC)  # EnvelopeRejected: a plain error naming the check

        async def send(obj: dict[str, Any], final: bool, error: bool) -> None:
            writer.write(encode_frame(KIND_SEALED, exchange.seal(obj, final=final, error=error)))
            await writer.drain()

        try:
            request = self.sealed.admit(exchange)
            job = self._core.submit(request, transport="unix", peer=str(peer), client=exchange.client_label,
                                    request_id=exchange.request_id)
        except RequestError as exc:  # the client is authenticated: it gets a sealed answer
            await send(exc.to_wire(), True, True)
            return
        await self._stream(closed, job, send)

    async def _stream(self, closed: asyncio.Event, job: Job, send: Send) -> None:
        """Relay the job's events; if the client hangs up first, cancel the request at the next token."""
        await answer_unless_hung_up(job, closed, relay_events(job, self.control.model_name(), send), "unix")
