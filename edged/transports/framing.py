"""Unix socket framing of e2e-v1 §6: length(4, big-endian, counts kind + payload) || kind(1) || payload."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from edged.errors import BadRequest, IdleConnection
from edged.jsonbody import load_json

KIND_SEALED = 0x01
KIND_JSON = 0x02
KIND_CONTROL = 0x03
KINDS = (KIND_SEALED, KIND_JSON, KIND_CONTROL)
DEFAULT_MAX_FRAME = 1024 * 1024
# Once a frame has started, the rest must follow promptly: a client that stalls mid-frame would
# otherwise hold a connection slot forever.
FRAME_BODY_TIMEOUT_S = 30.0
# A connection with no request running must start its next frame within this, or it is closed:
# idle connections would otherwise fill every slot.
FRAME_IDLE_TIMEOUT_S = 60.0
_LENGTH = struct.Struct(">I")


def encode_frame(kind: int, payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload) + 1) + bytes((kind,)) + payload


def encode_json(kind: int, obj: Any) -> bytes:
    return encode_frame(kind, json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode())


async def read_frame(reader: asyncio.StreamReader, max_frame: int = DEFAULT_MAX_FRAME,
                     idle_timeout_s: float | None = None) -> tuple[int, bytes] | None:
    """The next (kind, payload), or None on a clean end of stream before a frame starts.

    Raises IdleConnection when ``idle_timeout_s`` passes before the frame's first byte, and
    BadRequest for a zero or oversized length, an unknown kind, or a frame cut short; the rest
    of the length and the body must arrive within FRAME_BODY_TIMEOUT_S of the first byte.
    """
    try:
        first = await asyncio.wait_for(reader.readexactly(1), idle_timeout_s)
    except asyncio.IncompleteReadError:
        return None
    except TimeoutError:
        raise IdleConnection() from None
    deadline = asyncio.get_running_loop().time() + FRAME_BODY_TIMEOUT_S
    try:
        async with asyncio.timeout_at(deadline):
            head = first + await reader.readexactly(3)
            (length,) = _LENGTH.unpack(head)
            if length == 0:
                raise BadRequest("frame length 0: a frame carries at least its kind byte")
            if length > max_frame:
                raise BadRequest(f"frame of {length} bytes exceeds the maximum of {max_frame}")
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                raise BadRequest(f"frame cut short: {len(exc.partial)} of {length} bytes") from None
    except asyncio.IncompleteReadError:
        raise BadRequest("frame cut short inside the length field") from None
    except TimeoutError:
        raise BadRequest(f"frame not complete within {FRAME_BODY_TIMEOUT_S:g} s of its first byte") from None
    if body[0] not in KINDS:
        raise BadRequest(f"unknown frame kind 0x{body[0]:02x}; expected 0x01, 0x02 or 0x03")
    return body[0], body[1:]


def parse_json_object(payload: bytes, what: str) -> dict[str, Any]:
    data = load_json(payload, what)
    if not isinstance(data, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return data
