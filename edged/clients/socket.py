"""A small blocking client for the Unix socket: control ops, plaintext and sealed requests."""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any, Iterator

from edged.errors import RemoteError, TransportError
from edged.structured.answers import Answer, answer_of, function_tool, json_schema_format, tool_choice

__all__ = ["Answer", "SocketClient", "answer_of", "event_of", "function_tool", "json_schema_format", "tool_choice"]
from edged.transports.framing import KIND_CONTROL, KIND_JSON, KIND_SEALED, encode_frame, encode_json

_LENGTH = struct.Struct(">I")


def event_of(plaintext: bytes) -> dict[str, Any]:
    """A response event from a sealed chunk's plaintext; an error object becomes RemoteError."""
    event = json.loads(plaintext)
    if "error" in event:
        raise RemoteError(event["error"]["code"], event["error"]["message"])
    return dict(event)


class SocketClient:
    def __init__(self, path: Path, timeout: float | None = 300.0, max_frame: int = 16 * 1024 * 1024) -> None:
        self.path = path
        self._timeout = timeout
        self._max_frame = max_frame
        self._sock: socket.socket | None = None

    def __enter__(self) -> "SocketClient":
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self._timeout)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            sock.close()
            raise TransportError(f"no daemon socket at {self.path}: is `edged serve` running? "
                                 "(pass --socket PATH if it listens elsewhere)") from None
        except PermissionError:
            sock.close()
            raise TransportError(f"permission denied on {self.path}: join the daemon's group "
                                 "or run as the daemon's user") from None
        except ConnectionRefusedError:
            sock.close()
            raise TransportError(f"nothing is listening on {self.path}: the daemon is not running") from None
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send_raw(self, data: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(data)

    def read_frame(self) -> tuple[int, bytes]:
        head = self._read_exactly(4)
        (length,) = _LENGTH.unpack(head)
        if not 1 <= length <= self._max_frame:
            raise TransportError(f"daemon sent a frame of invalid length {length}")
        body = self._read_exactly(length)
        return body[0], body[1:]

    def _read_exactly(self, n: int) -> bytes:
        assert self._sock is not None
        chunks, got = [], 0
        while got < n:
            chunk = self._sock.recv(n - got)
            if not chunk:
                raise TransportError("the daemon closed the connection")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def control(self, op: str, **fields: Any) -> dict[str, Any]:
        self.send_raw(encode_json(KIND_CONTROL, {"op": op, **fields}))
        _kind, payload = self.read_frame()
        reply = json.loads(payload)
        if "error" in reply:
            raise RemoteError(reply["error"]["code"], reply["error"]["message"])
        return dict(reply)

    def ask(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Send a plaintext request; yield each event until the final one (raises RemoteError on an error)."""
        self.send_raw(encode_json(KIND_JSON, body))
        while True:
            _kind, payload = self.read_frame()
            event = json.loads(payload)
            if "error" in event:
                raise RemoteError(event["error"]["code"], event["error"]["message"])
            yield event
            if "edged" in event:
                return

    def fetch_prekey(self, *, device_identity: bytes | None = None, fingerprint: str | None = None) -> Any:
        """The device's current prekey, verified against a pinned identity key or fingerprint."""
        import time

        from edged.crypto.client import verify_prekey_record

        reply = self.control("prekey")
        try:
            served_identity = bytes.fromhex(reply["identity_pub"])
            record = bytes.fromhex(reply["prekey_record"])
        except (KeyError, ValueError, TypeError):
            raise TransportError("the daemon's prekey reply is malformed") from None
        if device_identity is not None and device_identity != served_identity:
            raise TransportError("the daemon's identity key does not match the pinned one: wrong device, or "
                                 "someone is impersonating it")
        info = verify_prekey_record(record, identity_pub=device_identity or served_identity,
                                    device_id=reply.get("device_id", ""), now=time.time(),
                                    expected_fingerprint=fingerprint)
        return info, device_identity or served_identity

    def ask_sealed(self, request: bytes, opener: Any) -> Iterator[dict[str, Any]]:
        """Send a sealed request; open each chunk with `opener` (a crypto ResponseOpener) and yield events."""
        self.send_raw(encode_frame(KIND_SEALED, request))
        while True:
            kind, payload = self.read_frame()
            if kind != KIND_SEALED:
                event = json.loads(payload)
                error = event.get("error", {})
                raise RemoteError(error.get("code", "internal"), error.get("message", "unexpected reply"))
            chunk = opener.open(payload)  # StreamError on anything tampered, reordered or replayed
            yield event_of(chunk.plaintext)
            if chunk.final:
                return
