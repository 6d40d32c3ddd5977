"""The sealed response stream (e2e-v1 section 4): device-side sealer, client-side opener."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edged.crypto import wire
from edged.errors import StreamError, StreamFinished

FLAG_FINAL: Final = 0x01
FLAG_ERROR: Final = 0x02
RESPONSE_NONCE_LEN: Final = 16
RESPONSE_HEADER_LEN: Final = 40
MAX_SEQ: Final = 2**32 - 1

_RHEADER = struct.Struct(">BBBB16s16sI")


@dataclass(frozen=True, slots=True)
class OpenedChunk:
    """One authenticated chunk of a response stream."""

    seq: int
    final: bool
    error: bool
    plaintext: bytes


class _StreamKey:
    """Per-stream ChaCha20-Poly1305 key and base nonce, derived once and reused for every chunk."""

    __slots__ = ("aead", "base_nonce")

    def __init__(self, resp_secret: bytes, header: bytes, enc: bytes, resp_nonce: bytes, resp_topic: str) -> None:
        okm = HKDF(
            algorithm=hashes.SHA256(), length=44, salt=header + enc + resp_nonce,
            info=wire.RESPONSE_INFO_LABEL + wire.lp16(resp_topic.encode("utf-8")),
        ).derive(resp_secret)
        self.aead = ChaCha20Poly1305(okm[:32])
        self.base_nonce = int.from_bytes(okm[32:44], "big")

    def nonce(self, seq: int) -> bytes:
        return (self.base_nonce ^ seq).to_bytes(12, "big")


def _check_request_material(resp_secret: bytes, header: bytes, enc: bytes, req_id: bytes) -> None:
    if len(resp_secret) != wire.RESP_SECRET_LEN or len(header) != wire.HEADER_LEN or len(enc) != wire.ENC_LEN:
        raise ValueError("resp_secret, header and enc must be 32, 36 and 32 bytes")
    if req_id != header[20:36]:
        raise ValueError("req_id does not match the request header")


class ResponseSealer:
    """Seals the chunks of one response stream, seq 0, 1, 2, ... up to the FINAL chunk."""

    def __init__(self, resp_secret: bytes, header: bytes, enc: bytes, resp_topic: str, req_id: bytes,
                 nonce: bytes | None = None) -> None:
        _check_request_material(resp_secret, header, enc, req_id)
        # A fresh device-chosen nonce per stream keeps key+nonce unique even if a request is replayed.
        self.resp_nonce = os.urandom(RESPONSE_NONCE_LEN) if nonce is None else nonce
        if len(self.resp_nonce) != RESPONSE_NONCE_LEN:
            raise ValueError("the response nonce must be 16 bytes")
        self.req_id = req_id
        self._key = _StreamKey(resp_secret, header, enc, self.resp_nonce, resp_topic)
        self._seq = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def seal(self, plaintext: bytes, *, final: bool, error: bool = False) -> bytes:
        """Seal the next chunk; ``error`` (an error object) is only allowed on the FINAL chunk."""
        if self._finished:
            raise StreamFinished("the response stream already sent its FINAL chunk")
        if error and not final:
            raise ValueError("an ERROR chunk must also be FINAL (spec section 5)")
        if self._seq > MAX_SEQ:
            raise StreamError("response stream exceeded 2**32 chunks")
        flags = (FLAG_FINAL if final else 0) | (FLAG_ERROR if error else 0)
        rheader = _RHEADER.pack(wire.VERSION, wire.TYPE_RESPONSE, flags, 0, self.req_id, self.resp_nonce, self._seq)
        chunk = rheader + self._key.aead.encrypt(self._key.nonce(self._seq), plaintext, rheader)
        self._seq += 1
        self._finished = final
        return chunk


class ResponseOpener:
    """Client side: accepts the chunks of one stream strictly in order; ``complete`` after FINAL.

    A chunk that fails a check raises StreamError and leaves the state unchanged, so a forged chunk
    injected by a third party cannot advance or poison the stream; the caller decides to abort.
    """

    def __init__(self, resp_secret: bytes, header: bytes, enc: bytes, resp_topic: str) -> None:
        _check_request_material(resp_secret, header, enc, header[20:36])
        self._resp_secret = resp_secret
        self._header = header
        self._enc = enc
        self._resp_topic = resp_topic
        self.req_id = header[20:36]
        self._resp_nonce: bytes | None = None
        self._key: _StreamKey | None = None
        self._next_seq = 0
        self._complete = False

    @property
    def complete(self) -> bool:
        """True only after a valid FINAL chunk; a stream that stops before it is truncated."""
        return self._complete

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def open(self, chunk: bytes) -> OpenedChunk:
        if len(chunk) < RESPONSE_HEADER_LEN + wire.TAG_LEN:
            raise StreamError(f"chunk is {len(chunk)} bytes, shorter than header and tag")
        version, type_, flags, reserved, req_id, resp_nonce, seq = _RHEADER.unpack_from(chunk, 0)
        if version != wire.VERSION or type_ != wire.TYPE_RESPONSE or reserved != 0:
            raise StreamError("not an e2e-v1 response chunk (version, type or reserved byte)")
        if flags & ~(FLAG_FINAL | FLAG_ERROR):
            raise StreamError(f"unknown flag bits 0x{flags:02x}")
        if flags & FLAG_ERROR and not flags & FLAG_FINAL:
            raise StreamError("ERROR flag without FINAL")
        if req_id != self.req_id:
            raise StreamError("chunk belongs to another request (req_id differs)")
        if self._complete:
            raise StreamError("chunk after the FINAL chunk")
        if self._resp_nonce is not None and resp_nonce != self._resp_nonce:
            raise StreamError("response nonce changed within the stream")
        if seq != self._next_seq:
            kind = "duplicate or old" if seq < self._next_seq else "out-of-order (a chunk is missing)"
            raise StreamError(f"{kind} chunk: seq {seq}, expected {self._next_seq}")
        key = self._key or _StreamKey(self._resp_secret, self._header, self._enc, resp_nonce, self._resp_topic)
        rheader = chunk[:RESPONSE_HEADER_LEN]
        try:
            plaintext = key.aead.decrypt(key.nonce(seq), chunk[RESPONSE_HEADER_LEN:], rheader)
        except InvalidTag as exc:
            raise StreamError(f"chunk seq {seq} failed authentication (tampered or forged)") from exc
        # Only an authenticated chunk may fix the nonce and advance the stream.
        self._key = key
        self._resp_nonce = resp_nonce
        self._next_seq = seq + 1
        final = bool(flags & FLAG_FINAL)
        self._complete = final
        return OpenedChunk(seq=seq, final=final, error=bool(flags & FLAG_ERROR), plaintext=plaintext)
