"""DSSE-style signed envelopes: Ed25519 signatures over a type-bound PAE, M-of-N distinct keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, ValidationError

from edged.validation import StrictModel, describe_validation_error as shared_describe
from edged.errors import UpdateError

logger = structlog.get_logger(__name__)

MAX_ENVELOPE_BYTES: Final = 64 * 1024
MAX_SIGNATURES: Final = 32
SIGNATURE_BYTES: Final = 64
KEYID_PATTERN: Final = r"^[0-9a-f]{64}$"

KeyId = Annotated[str, Field(pattern=KEYID_PATTERN, description="hex SHA-256 of the raw 32-byte Ed25519 public key")]


class EnvelopeSignature(StrictModel):
    """One signature of an envelope, attributed to a key id."""

    keyid: KeyId
    sig: str = Field(min_length=1, max_length=128, description="standard base64 of the 64-byte Ed25519 signature")


class Envelope(StrictModel):
    """The envelope as it travels: the payload is base64 of the exact signed bytes.

    Only the wire name "payloadType" is accepted on input (StrictModel does not validate by name).
    """

    payload_type: str = Field(
        alias="payloadType", min_length=1, max_length=128, description="media type that the signatures bind"
    )
    payload: str = Field(max_length=MAX_ENVELOPE_BYTES, description="standard base64 of the exact payload bytes")
    signatures: list[EnvelopeSignature] = Field(
        max_length=MAX_SIGNATURES, description="signatures over PAE(payloadType, payload); none = unsigned"
    )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what each signature actually covers."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def keyid_of(public_key: Ed25519PublicKey) -> str:
    """Key id = lowercase hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(public_key.public_bytes_raw()).hexdigest()


def sign(payload_type: str, payload: bytes, keys: Sequence[Ed25519PrivateKey]) -> bytes:
    """Sign ``payload`` with every key (each key once) and return the envelope as JSON bytes."""
    if not keys:
        raise ValueError("sign() needs at least one private key")
    message = pae(payload_type, payload)
    by_keyid = {keyid_of(key.public_key()): key for key in keys}
    envelope = {
        "payloadType": payload_type,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [
            {"keyid": keyid, "sig": base64.b64encode(key.sign(message)).decode("ascii")}
            for keyid, key in sorted(by_keyid.items())
        ],
    }
    envelope_bytes = (json.dumps(envelope, indent=2) + "\n").encode("utf-8")
    if len(envelope_bytes) > MAX_ENVELOPE_BYTES:
        # Devices would refuse it unread; better to say so on the operator's machine.
        raise UpdateError("oversize", f"signed envelope is {len(envelope_bytes)} bytes, over {MAX_ENVELOPE_BYTES}")
    return envelope_bytes


def verify(envelope_bytes: bytes, expected_type: str, keys: Mapping[str, Ed25519PublicKey], threshold: int) -> bytes:
    """Return the payload bytes once ``threshold`` distinct known keys signed them; else UpdateError.

    Checks run in this order: size cap, strict envelope parse, payload type, signatures.
    Nothing in the payload is parsed here: the caller parses only the bytes returned.
    """
    if threshold < 1:
        raise ValueError("a threshold below 1 would accept unsigned documents")
    envelope = parse_envelope(envelope_bytes)
    if envelope.payload_type != expected_type:
        raise UpdateError(
            "payload_type", f"envelope carries {envelope.payload_type[:64]!r}, expected {expected_type!r}"
        )
    payload = decode_base64(envelope.payload, "payload")
    message = pae(expected_type, payload)
    valid: set[str] = set()
    invalid = unknown = 0
    for signature in envelope.signatures:
        public_key = keys.get(signature.keyid)
        if public_key is None:
            unknown += 1
            continue
        if signature.keyid in valid:
            continue  # the same key signing twice counts once
        if _signature_is_valid(public_key, signature.sig, message):
            valid.add(signature.keyid)
        else:
            invalid += 1
    if len(valid) < threshold:
        raise UpdateError(
            "signature",
            f"{len(valid)} valid signature(s) from distinct trusted keys, {threshold} needed "
            f"({invalid} invalid, {unknown} from unknown keys)",
        )
    return payload


def parse_envelope(envelope_bytes: bytes) -> Envelope:
    """Size-check and strictly parse an envelope; every failure is an UpdateError."""
    if len(envelope_bytes) > MAX_ENVELOPE_BYTES:
        raise UpdateError("oversize", f"envelope is over {MAX_ENVELOPE_BYTES} bytes")
    document = loads_strict(envelope_bytes, "envelope")
    try:
        return Envelope.model_validate(document)
    except ValidationError as exc:
        raise UpdateError("malformed", f"envelope: {describe_validation_error(exc)}") from None


def loads_strict(data: bytes, what: str) -> Any:
    """Parse JSON that must be UTF-8, free of duplicate keys, NaN/Infinity (also by overflow) and lone surrogates."""
    try:
        document = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_object_without_duplicates,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
        )
        # A lone surrogate parses fine but cannot be encoded; find it now, not in some later step.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
    except RecursionError:
        raise UpdateError("malformed", f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise UpdateError("malformed", f"{what} is not strict JSON: {type(exc).__name__}: {str(exc)[:120]}") from None
    return document


def decode_base64(text: str, what: str) -> bytes:
    """Decode canonical standard base64 only (no whitespace, no URL alphabet, no stray bits)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UpdateError("malformed", f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise UpdateError("malformed", f"{what} is not canonical base64")
    return raw


def describe_validation_error(exc: ValidationError) -> str:
    """What is wrong, on one line, without echoing input values (a signed document is not ours to print)."""
    return shared_describe(exc, separator="; ")


def _signature_is_valid(public_key: Ed25519PublicKey, sig_text: str, message: bytes) -> bool:
    try:
        sig = decode_base64(sig_text, "signature")
    except UpdateError:
        return False
    if len(sig) != SIGNATURE_BYTES:
        return False
    try:
        public_key.verify(sig, message)
    except InvalidSignature:
        return False
    return True


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("a number overflows to infinity")
    return value
