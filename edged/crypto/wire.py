"""Byte layouts of e2e-v1 (spec sections 1-4): lp16, request header, info, inner payload, ids."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from edged.crypto.limits import (  # the sizes live apart so the config can read them without cryptography
    HEADER_LEN as HEADER_LEN,
    ENC_LEN as ENC_LEN,
    TAG_LEN as TAG_LEN,
    KEY_LEN as KEY_LEN,
    SIG_LEN as SIG_LEN,
    REQ_ID_LEN as REQ_ID_LEN,
    PREKEY_ID_LEN as PREKEY_ID_LEN,
    RESP_SECRET_LEN as RESP_SECRET_LEN,
    MAX_RESP_TOPIC_BYTES as MAX_RESP_TOPIC_BYTES,
    MIN_INNER_LEN as MIN_INNER_LEN,
    MIN_REQUEST_LEN as MIN_REQUEST_LEN,
    DEFAULT_MAX_REQUEST_BYTES as DEFAULT_MAX_REQUEST_BYTES,
)
from edged.errors import InnerParseError

VERSION: Final = 0x01
TYPE_REQUEST: Final = 0x01
TYPE_RESPONSE: Final = 0x02
SUITE_X25519_SHA256_CHACHA: Final = 0x0001


PREKEY_ID_LABEL: Final = b"edged/v1 prekey-id\0"
PREKEY_SIGNATURE_LABEL: Final = b"edged/v1 prekey\0"
REQUEST_INFO_LABEL: Final = b"edged/v1 request\0"
REQUEST_SIGNATURE_LABEL: Final = b"edged/v1 request-signature\0"
RESPONSE_INFO_LABEL: Final = b"edged/v1 response\0"


# Suite 0x0001; one shared object, it holds no key material.
HPKE_SUITE: Final = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)

_HEADER = struct.Struct(">BBH8sQ16s")
_INNER_LENGTHS = struct.Struct(">I")


def lp16(value: bytes) -> bytes:
    """2-byte big-endian length, then the value."""
    if len(value) > 0xFFFF:
        raise ValueError(f"lp16 value too long: {len(value)} bytes (at most 65535)")
    return len(value).to_bytes(2, "big") + value


def prekey_id(prekey_pub: bytes) -> bytes:
    """SHA-256("edged/v1 prekey-id\\0" || prekey_pub)[:8]."""
    return hashlib.sha256(PREKEY_ID_LABEL + prekey_pub).digest()[:PREKEY_ID_LEN]


def fingerprint(identity_pub: bytes) -> str:
    """The fingerprint shown to people: lowercase hex of SHA-256(identity_pub)[:16]."""
    return hashlib.sha256(identity_pub).digest()[:16].hex()


@dataclass(frozen=True, slots=True)
class RequestHeader:
    """The 36-byte cleartext header of a request."""

    version: int
    type: int
    suite: int
    prekey_id: bytes
    ts_ms: int
    req_id: bytes

    def pack(self) -> bytes:
        return _HEADER.pack(self.version, self.type, self.suite, self.prekey_id, self.ts_ms, self.req_id)

    @classmethod
    def unpack(cls, data: bytes) -> RequestHeader:
        version, type_, suite, pk_id, ts_ms, req_id = _HEADER.unpack_from(data, 0)
        return cls(version, type_, suite, pk_id, ts_ms, req_id)


def request_info(device_id: str, request_topic: str, header: bytes) -> bytes:
    """HPKE info: label || lp16(device_id) || lp16(request_topic) || header."""
    return (REQUEST_INFO_LABEL + lp16(device_id.encode("utf-8"))
            + lp16(request_topic.encode("utf-8")) + header)


def signature_message(identity_pub: bytes, info: bytes, inner_without_sig: bytes) -> bytes:
    """What the client signs: label || device identity || info || inner-without-sig."""
    return REQUEST_SIGNATURE_LABEL + identity_pub + info + inner_without_sig


def inner_without_signature(client_pub: bytes, resp_secret: bytes, resp_topic: bytes, body: bytes) -> bytes:
    """client_pub || resp_secret || lp16(resp_topic) || body_len(4) || body."""
    if len(client_pub) != KEY_LEN or len(resp_secret) != RESP_SECRET_LEN:
        raise ValueError("client_pub and resp_secret must be 32 bytes each")
    if len(resp_topic) > MAX_RESP_TOPIC_BYTES:
        raise ValueError(f"resp_topic is {len(resp_topic)} bytes, at most {MAX_RESP_TOPIC_BYTES} allowed")
    return client_pub + resp_secret + lp16(resp_topic) + _INNER_LENGTHS.pack(len(body)) + body


@dataclass(frozen=True, slots=True)
class InnerPayload:
    """The parsed plaintext inside the HPKE ciphertext."""

    client_pub: bytes
    resp_secret: bytes
    resp_topic: str
    body: bytes
    signed_part: bytes
    signature: bytes


def parse_inner(inner: bytes) -> InnerPayload:
    """Strict parse: exact lengths, no trailing bytes, UTF-8 topic of at most 512 bytes."""
    if len(inner) < MIN_INNER_LEN:
        raise InnerParseError(f"inner payload is {len(inner)} bytes, shorter than the minimum {MIN_INNER_LEN}")
    offset = KEY_LEN + RESP_SECRET_LEN
    topic_len = int.from_bytes(inner[offset:offset + 2], "big")
    if topic_len > MAX_RESP_TOPIC_BYTES:
        raise InnerParseError(f"resp_topic length {topic_len} exceeds {MAX_RESP_TOPIC_BYTES}")
    offset += 2
    topic_end = offset + topic_len
    if topic_end + 4 + SIG_LEN > len(inner):
        raise InnerParseError("resp_topic length runs past the end of the inner payload")
    topic_bytes = inner[offset:topic_end]
    (body_len,) = _INNER_LENGTHS.unpack_from(inner, topic_end)
    body_start = topic_end + 4
    expected_len = body_start + body_len + SIG_LEN
    if expected_len != len(inner):
        raise InnerParseError(f"body_len {body_len} gives {expected_len} bytes, the payload has {len(inner)}")
    try:
        resp_topic = topic_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InnerParseError("resp_topic is not valid UTF-8") from exc
    signed_end = body_start + body_len
    return InnerPayload(
        client_pub=inner[:KEY_LEN],
        resp_secret=inner[KEY_LEN:KEY_LEN + RESP_SECRET_LEN],
        resp_topic=resp_topic,
        body=inner[body_start:signed_end],
        signed_part=inner[:signed_end],
        signature=inner[signed_end:],
    )
