"""Client library: prekey record verification, SealedRequest end to end, padding to size buckets."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edged.crypto import wire
from edged.crypto.allowlist import AllowList
from edged.crypto.client import (
    PrekeyRecordRejected,
    SealedRequest,
    verify_prekey_record,
)
from edged.crypto.envelope import open_request
from edged.crypto.keys import DeviceIdentity, PrekeyRing
from edged.crypto.padding import bucket_size, pad_json
from edged.crypto.replay import ReplayCache

NOW = 1_800_000_000.0


@pytest.fixture
def device() -> tuple[DeviceIdentity, PrekeyRing]:
    identity = DeviceIdentity(Ed25519PrivateKey.generate())
    return identity, PrekeyRing(identity, "device-1", now=NOW)


def _verify(record: bytes, identity_pub: bytes, **overrides: object) -> None:
    kwargs: dict[str, object] = {"identity_pub": identity_pub, "device_id": "device-1", "now": NOW}
    kwargs.update(overrides)
    verify_prekey_record(record, **kwargs)  # type: ignore[arg-type]


def _reason(record: bytes, identity_pub: bytes, **overrides: object) -> str:
    with pytest.raises(PrekeyRecordRejected) as info:
        _verify(record, identity_pub, **overrides)
    return info.value.reason


def test_record_checks(device: tuple[DeviceIdentity, PrekeyRing]) -> None:
    identity, ring = device
    record = ring.current_record()
    info = ring.current_info()
    _verify(record, identity.public_bytes)
    _verify(record, identity.public_bytes, expected_fingerprint=identity.fingerprint.upper())
    other = DeviceIdentity(Ed25519PrivateKey.generate())
    assert _reason(record, other.public_bytes) == "signature"
    assert _reason(record, identity.public_bytes, expected_fingerprint=other.fingerprint) == "identity"
    assert _reason(record, identity.public_bytes, device_id="device-2") == "device"
    assert _reason(record, identity.public_bytes, now=info.not_before - 1) == "validity"
    assert _reason(record, identity.public_bytes, now=info.not_after) == "validity"
    _verify(record, identity.public_bytes, now=info.not_after - 1)


def test_truncated_extended_and_flipped_records_are_rejected(device: tuple[DeviceIdentity, PrekeyRing]) -> None:
    identity, ring = device
    record = ring.current_record()
    for length in range(len(record)):
        assert _reason(record[:length], identity.public_bytes) in {"format", "signature"}
    assert _reason(record + b"\x00", identity.public_bytes) == "format"
    for index in range(len(record)):
        flipped = bytearray(record)
        flipped[index] ^= 0x01
        assert _reason(bytes(flipped), identity.public_bytes) in {"format", "signature"}


def test_signed_record_with_a_wrong_prekey_id_is_rejected(device: tuple[DeviceIdentity, PrekeyRing]) -> None:
    identity, _ = device
    pub = X25519PrivateKey.generate().public_key().public_bytes_raw()
    record = (b"\x01" + wire.lp16(b"device-1") + b"\x00" * 8 + pub + struct.pack(">QQ", int(NOW) - 60, int(NOW) + 60))
    signed = record + identity.sign(wire.PREKEY_SIGNATURE_LABEL + record)
    assert _reason(signed, identity.public_bytes) == "prekey_id"


def test_sealed_request_end_to_end(tmp_path: Path, device: tuple[DeviceIdentity, PrekeyRing]) -> None:
    identity, ring = device
    client = Ed25519PrivateKey.generate()
    (tmp_path / "clients.toml").write_text(
        f'[[clients]]\nlabel = "phone"\npublic_key = "{client.public_key().public_bytes_raw().hex()}"\n'
        'response_prefix = "edged/clients/phone"\n')
    prekey = verify_prekey_record(ring.current_record(), identity_pub=identity.public_bytes,
                                  device_id="device-1", now=NOW)
    body = pad_json({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8})
    sealed = SealedRequest.build(client_key=client, prekey=prekey, identity_pub=identity.public_bytes,
                                 request_topic="edged/device-1/req", resp_topic="edged/clients/phone/r1",
                                 body=body, ts_ms=int(NOW * 1000))
    opened = open_request(sealed.data, device_id="device-1", request_topic="edged/device-1/req",
                          identity_pub=identity.public_bytes, prekeys=ring,
                          allow_list=AllowList.load(tmp_path / "clients.toml"), replay=ReplayCache(), now=NOW)
    assert opened.body == body and opened.req_id == sealed.req_id and opened.client_label == "phone"
    sealer = opened.response_sealer()
    chunks = [sealer.seal(pad_json({"choices": [{"delta": {"content": "hel"}}]}, min_bucket=128), final=False),
              sealer.seal(b'{"choices":[],"edged":{}}', final=True)]
    first = sealed.opener.open(chunks[0])
    assert json.loads(first.plaintext)["choices"][0]["delta"]["content"] == "hel"
    assert len(first.plaintext) == 128
    assert sealed.opener.open(chunks[1]).final and sealed.opener.complete
    assert "hi" not in repr(sealed)


@pytest.mark.parametrize("length,bucket", [(0, 256), (1, 256), (256, 256), (257, 512), (5000, 8192),
                                           (65536, 65536), (65537, 131072), (200_000, 262144)])
def test_bucket_sizes(length: int, bucket: int) -> None:
    assert bucket_size(length) == bucket


@pytest.mark.parametrize("content", ["", "x", "y" * 300, "ünïcødé ✓" * 40, "quote\"and\\slash"])
def test_pad_json_fills_the_bucket_exactly(content: str) -> None:
    obj = {"messages": [{"role": "user", "content": content}]}
    padded = pad_json(obj)
    assert len(padded) == bucket_size(len(padded))
    decoded = json.loads(padded)
    assert decoded["messages"] == obj["messages"]
    assert set(decoded["pad"]) <= {" "}


def test_pad_json_refuses_an_existing_pad_field() -> None:
    with pytest.raises(ValueError):
        pad_json({"pad": "x"})
