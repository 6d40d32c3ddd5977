"""Signed prekey records (e2e-v1 section 2): build on the device, verify on the client."""

from __future__ import annotations

import hmac
import struct
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import Field

from edged.crypto import wire
from edged.errors import PrekeyRecordRejected
from edged.validation import StrictModel

_TIMES = struct.Struct(">QQ")
_MAX_UINT64: Final = 2**64 - 1


class PrekeyInfo(StrictModel):
    """The verified contents of a prekey record, ready for sealing requests."""

    device_id: str = Field(min_length=1, max_length=0xFFFF, description="device id the record is bound to")
    prekey_id: bytes = Field(min_length=8, max_length=8, description="SHA-256 based id of prekey_pub")
    prekey_pub: bytes = Field(min_length=32, max_length=32, description="X25519 public key (HPKE recipient)")
    not_before: int = Field(ge=0, le=_MAX_UINT64, description="first unix second the prekey may be used")
    not_after: int = Field(ge=0, le=_MAX_UINT64, description="unix second from which the prekey is expired")


def build_prekey_record(identity: Ed25519PrivateKey, *, device_id: str, prekey_pub: bytes,
                        not_before: int, not_after: int) -> bytes:
    """The signed record: record || Ed25519(identity, label || record). Deterministic."""
    if len(prekey_pub) != wire.KEY_LEN:
        raise ValueError("prekey_pub must be 32 bytes")
    if not 0 <= not_before < not_after <= _MAX_UINT64:
        raise ValueError("need 0 <= not_before < not_after < 2**64")
    record = (bytes([wire.VERSION]) + wire.lp16(device_id.encode("utf-8")) + wire.prekey_id(prekey_pub)
              + prekey_pub + _TIMES.pack(not_before, not_after))
    return record + identity.sign(wire.PREKEY_SIGNATURE_LABEL + record)


def parse_prekey_record(signed: bytes) -> tuple[PrekeyInfo, bytes, bytes]:
    """Split a signed record into (contents, record bytes, signature) without checking the signature."""
    if len(signed) < 3 or signed[0] != wire.VERSION:
        raise PrekeyRecordRejected("format", "not a version 1 prekey record")
    id_len = int.from_bytes(signed[1:3], "big")
    expected = 3 + id_len + wire.PREKEY_ID_LEN + wire.KEY_LEN + _TIMES.size + wire.SIG_LEN
    if len(signed) != expected:
        raise PrekeyRecordRejected("format", f"record is {len(signed)} bytes, its layout needs {expected}")
    offset = 3 + id_len
    try:
        device_id = signed[3:offset].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrekeyRecordRejected("format", "device id is not UTF-8") from exc
    pk_id = signed[offset:offset + wire.PREKEY_ID_LEN]
    offset += wire.PREKEY_ID_LEN
    prekey_pub = signed[offset:offset + wire.KEY_LEN]
    offset += wire.KEY_LEN
    not_before, not_after = _TIMES.unpack_from(signed, offset)
    record_end = offset + _TIMES.size
    if not device_id:
        raise PrekeyRecordRejected("format", "empty device id")
    info = PrekeyInfo(device_id=device_id, prekey_id=pk_id, prekey_pub=prekey_pub,
                      not_before=not_before, not_after=not_after)
    return info, signed[:record_end], signed[record_end:]


def verify_prekey_record(signed: bytes, *, identity_pub: bytes, device_id: str, now: float,
                         expected_fingerprint: str | None = None) -> PrekeyInfo:
    """Check a signed prekey record the way spec section 2 requires; return its contents.

    ``identity_pub`` is the device's pinned Ed25519 key. A client that pinned only the fingerprint
    passes the identity key the device served together with ``expected_fingerprint``.
    """
    if expected_fingerprint is not None and not hmac.compare_digest(
            wire.fingerprint(identity_pub), expected_fingerprint.strip().lower()):
        raise PrekeyRecordRejected("identity", "the device identity key does not match the pinned fingerprint")
    info, record, signature = parse_prekey_record(signed)
    try:
        Ed25519PublicKey.from_public_bytes(identity_pub).verify(signature, wire.PREKEY_SIGNATURE_LABEL + record)
    except (InvalidSignature, ValueError) as exc:
        raise PrekeyRecordRejected("signature", "record not signed by the pinned device identity") from exc
    if info.device_id != device_id:
        raise PrekeyRecordRejected("device", f"record is for device {info.device_id!r}, expected {device_id!r}")
    if wire.prekey_id(info.prekey_pub) != info.prekey_id:
        raise PrekeyRecordRejected("prekey_id", "prekey_id does not match the prekey public key")
    if not info.not_before <= now < info.not_after:
        raise PrekeyRecordRejected(
            "validity", f"record valid from {info.not_before} until {info.not_after}, now is {int(now)}; "
                        "check this host's clock or fetch the current record")
    return info
