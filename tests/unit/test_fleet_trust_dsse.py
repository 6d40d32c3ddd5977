"""DSSE envelopes: PAE, thresholds of distinct keys, strict parsing of hostile input."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.errors import UpdateError
from edged.fleet import dsse

TYPE = "application/vnd.edged.test+json"
PAYLOAD = b'{"hello":"world"}'


def _keys(count: int) -> list[Ed25519PrivateKey]:
    return [Ed25519PrivateKey.generate() for _ in range(count)]


def _trusted(keys: list[Ed25519PrivateKey]) -> dict[str, object]:
    return {dsse.keyid_of(key.public_key()): key.public_key() for key in keys}


def _reason(envelope: bytes, keys: dict[str, object], threshold: int = 1, expected_type: str = TYPE) -> str:
    with pytest.raises(UpdateError) as caught:
        dsse.verify(envelope, expected_type, keys, threshold)  # type: ignore[arg-type]
    return caught.value.reason


def _edit(envelope: bytes, **changes: object) -> bytes:
    document = json.loads(envelope)
    document.update(changes)
    return json.dumps(document).encode()


def test_pae_matches_the_dsse_specification_example() -> None:
    encoded = dsse.pae("http://example.com/HelloWorld", b"hello world")
    assert encoded == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_keyid_is_sha256_of_the_raw_public_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(32))
    raw = key.public_key().public_bytes_raw()
    import hashlib

    assert dsse.keyid_of(key.public_key()) == hashlib.sha256(raw).hexdigest()


def test_round_trip_returns_the_exact_payload_bytes() -> None:
    keys = _keys(2)
    envelope = dsse.sign(TYPE, PAYLOAD, keys)
    assert dsse.verify(envelope, TYPE, _trusted(keys), 2) == PAYLOAD  # type: ignore[arg-type]


def test_payload_type_confusion_is_refused() -> None:
    keys = _keys(1)
    envelope = dsse.sign(TYPE, PAYLOAD, keys)
    assert _reason(envelope, _trusted(keys), expected_type="application/vnd.edged.root+json") == "payload_type"
    relabelled = _edit(envelope, payloadType="application/vnd.edged.other+json")
    assert _reason(relabelled, _trusted(keys), expected_type="application/vnd.edged.other+json") == "signature"


def test_same_key_signing_twice_counts_once() -> None:
    key = _keys(1)[0]
    envelope = json.loads(dsse.sign(TYPE, PAYLOAD, [key]))
    envelope["signatures"] = envelope["signatures"] * 2
    doubled = json.dumps(envelope).encode()
    with pytest.raises(UpdateError, match="1 valid signature") as caught:
        dsse.verify(doubled, TYPE, _trusted([key]), 2)  # type: ignore[arg-type]
    assert caught.value.reason == "signature"


def test_too_few_distinct_signatures_are_refused() -> None:
    keys = _keys(3)
    envelope = dsse.sign(TYPE, PAYLOAD, keys[:1])
    assert _reason(envelope, _trusted(keys), threshold=2) == "signature"


def test_unknown_keys_are_ignored_and_reported() -> None:
    trusted, stranger = _keys(1), _keys(2)
    envelope = dsse.sign(TYPE, PAYLOAD, stranger)
    with pytest.raises(UpdateError, match="2 from unknown keys"):
        dsse.verify(envelope, TYPE, _trusted(trusted), 1)  # type: ignore[arg-type]
    both = dsse.sign(TYPE, PAYLOAD, stranger + trusted)
    assert dsse.verify(both, TYPE, _trusted(trusted), 1) == PAYLOAD  # type: ignore[arg-type]


def test_a_bad_signature_is_counted_as_invalid() -> None:
    keys = _keys(1)
    document = json.loads(dsse.sign(TYPE, PAYLOAD, keys))
    sig = bytearray(base64.b64decode(document["signatures"][0]["sig"]))
    sig[5] ^= 0x01
    document["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(UpdateError, match="1 invalid") as caught:
        dsse.verify(json.dumps(document).encode(), TYPE, _trusted(keys), 1)  # type: ignore[arg-type]
    assert caught.value.reason == "signature"


@pytest.mark.parametrize("sig", ["", "AAAA", base64.b64encode(bytes(63)).decode(), "not base64!!", "QUJD\n"])
def test_signatures_of_the_wrong_shape_are_invalid_not_crashes(sig: str) -> None:
    keys = _keys(1)
    document = json.loads(dsse.sign(TYPE, PAYLOAD, keys))
    document["signatures"][0]["sig"] = sig
    reason = _reason(json.dumps(document).encode(), _trusted(keys))
    assert reason in {"signature", "malformed"}


def test_missing_signatures_are_refused() -> None:
    keys = _keys(1)
    unsigned = _edit(dsse.sign(TYPE, PAYLOAD, keys), signatures=[])
    assert _reason(unsigned, _trusted(keys)) == "signature"


def test_a_tampered_payload_is_refused() -> None:
    keys = _keys(1)
    tampered = _edit(dsse.sign(TYPE, PAYLOAD, keys), payload=base64.b64encode(b'{"hello":"there"}').decode())
    assert _reason(tampered, _trusted(keys)) == "signature"


def test_oversized_envelope_is_refused_before_parsing() -> None:
    oversized = b"{" + b" " * dsse.MAX_ENVELOPE_BYTES + b"}"
    assert _reason(oversized, {}) == "oversize"


def test_sign_refuses_to_make_an_envelope_devices_would_refuse() -> None:
    with pytest.raises(UpdateError) as caught:
        dsse.sign(TYPE, b"x" * dsse.MAX_ENVELOPE_BYTES, _keys(1))
    assert caught.value.reason == "oversize"


@pytest.mark.parametrize(
    "hostile",
    [
        b"",
        b"null",
        b"[]",
        b"{",
        b'{"payloadType": "a", "payload": "", "signatures": []',  # truncated
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",
        b"[" * 5000 + b"]" * 5000,
        b'{"payloadType": NaN}',
        b'{"payloadType": 1e400}',
        b'{"payloadType": "x", "payloadType": "y", "payload": "", "signatures": []}',
        b'{"payloadType": "\\ud800", "payload": "", "signatures": []}',
        b'{"payload_type": "x", "payload": "", "signatures": []}',
        b'{"payloadType": 1, "payload": "", "signatures": []}',
        b'{"payloadType": "x", "payload": "", "signatures": [], "extra": 1}',
        b'{"payloadType": "x", "payload": "", "signatures": [{"keyid": "ab", "sig": "AA=="}]}',
        b'{"version": ' + b"9" * 5000 + b"}",
    ],
)
def test_hostile_envelope_json_is_malformed(hostile: bytes) -> None:
    assert _reason(hostile, {}) == "malformed"


@pytest.mark.parametrize("payload", ["e30", "e30=\n", "e3 0=", "e30-", "e31=", "!!!!"])
def test_payload_base64_must_be_strict_and_canonical(payload: str) -> None:
    keys = _keys(1)
    envelope = _edit(dsse.sign(TYPE, b"{}", keys), payload=payload)
    assert _reason(envelope, _trusted(keys)) == "malformed"


def test_threshold_below_one_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        dsse.verify(dsse.sign(TYPE, PAYLOAD, _keys(1)), TYPE, {}, 0)


_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_KEYS = _keys(2)
_VALID = dsse.sign(TYPE, PAYLOAD, _KEYS)


@_FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_only_ever_raise_update_error(data: bytes) -> None:
    with pytest.raises(UpdateError):
        dsse.verify(data, TYPE, _trusted(_KEYS), 1)  # type: ignore[arg-type]


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@_FUZZ
@given(st.fixed_dictionaries({}, optional={"payloadType": _JSON, "payload": _JSON, "signatures": _JSON}))
def test_arbitrary_envelope_shapes_only_ever_raise_update_error(document: dict[str, object]) -> None:
    with pytest.raises(UpdateError):
        dsse.verify(json.dumps(document).encode(), TYPE, _trusted(_KEYS), 1)  # type: ignore[arg-type]


@_FUZZ
@given(st.integers(min_value=0, max_value=len(_VALID) - 1), st.integers(min_value=1, max_value=255))
def test_a_mutated_byte_is_refused_or_yields_the_original_payload(position: int, flip: int) -> None:
    mutated = bytearray(_VALID)
    mutated[position] ^= flip
    try:
        payload = dsse.verify(bytes(mutated), TYPE, _trusted(_KEYS), 2)  # type: ignore[arg-type]
    except UpdateError:
        return
    assert payload == PAYLOAD  # only harmless edits (e.g. whitespace) can survive
