"""e2e-v1 recorded vectors, byte for byte: prekey record, both request cases, response chunks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edged.crypto import wire
from edged.crypto.allowlist import AllowedClient
from edged.crypto.envelope import open_request
from edged.crypto.prekey import build_prekey_record, verify_prekey_record
from edged.crypto.replay import ReplayCache
from edged.crypto.response import ResponseOpener, ResponseSealer

# A verbatim copy of shared/specs/e2e-v1-vectors.json, so the suite does not depend on that tree.
VECTORS_JSON = r'''{
 "about": "edged e2e-v1 vectors. A device given device_identity_sk, prekey_sk and the allow-list [client public key] at time `now` MUST accept each request and recover the expected fields; given resp_secret and response_nonce it MUST produce exactly response_chunks for the two plaintexts shown in them.",
 "now": 1800000000.0,
 "device_id": "device-1",
 "device_identity_sk": "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
 "device_identity_pub": "79b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad049664",
 "client_sk": "2122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f40",
 "client_pub": "e7f162a10bec559afea195e4dce84b69568d5d2cb0963eb446c0685e2b17f2f0",
 "prekey_sk": "4142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f60",
 "prekey_not_before": 1799999940,
 "prekey_not_after": 1800003600,
 "prekey_record": "0100086465766963652d31116a7a6f22b9a89c64b101b1d0be5a8704bd078f9895001fc03e8e9f9522f188dd128d9846d48466000000006b49d1c4000000006b49e0108382719fb176fc344b4730df7a40d6ddeea3cdc02e0e4975774e765c726da3197322a7a912080461828110664ff850f0629192a11f38ed05d85bbf10bc768406",
 "response_plaintexts": [
  "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"4\"}}]}",
  "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}"
 ],
 "cases": [
  {
   "name": "mqtt",
   "request_topic": "edged/device-1/req",
   "request": "01010001116a7a6f22b9a89c000001a3185c5000000102030405060708090a0b0c0d0e0f9f4e7755b63a101ff756ae13697948e9a581c6a82a2159055ca99ad1093e665494063716d1c33cbe23e90613de5e8c25ee39f28f0f84be0b212ca184ff61a64971aabb8efbd1de7be8022ab175a8b62d32c74b548778af91e7d1ddee251af9eca3aa93a6fd3f3900cffc81f1865b45fa01801da5d555dcbd76fcfa25d86ac43bfe48ed56873e78d9d98e0c9dcaed1ec7357b00709de0737317dc74cd28589d5be033a53487cd5cc354a59b190aff28a75433a69a4b0825d3b555bce0d643dd3df84239abeaf99d90caeec98a11b8b02f22664be20cd02880b37524b4dcce7023cb4880e23e8e82b580c829f3531d60f712eed7fa9f591e0a1aec15c96fc580bba9df8701b99501c9a39e3bc503b45aefb1",
   "expect_body": "{\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"max_tokens\":16}",
   "expect_resp_topic": "edged/clients/a/resp",
   "expect_req_id": "000102030405060708090a0b0c0d0e0f",
   "expect_client_pub": "e7f162a10bec559afea195e4dce84b69568d5d2cb0963eb446c0685e2b17f2f0",
   "resp_secret": "50d6bcacb463bbfa55d29292f1f701bb24ddced36f50150a0959a59160233445",
   "response_nonce": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
   "response_chunks": [
    "01020000000102030405060708090a0b0c0d0e0faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0000000002f7449abacb1c479889ef81935e08fb77d7eb7e4515eead853fda11d2c384ce59766f27260684b64f54c1bd20c3b6431ae94715dfb37b2b684ba038b40083c5b3",
    "01020100000102030405060708090a0b0c0d0e0faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0000000140a40cab7e02c74bd8d6cfe41140bfd903a33edb013193fa1217128e160c48d6ad981a68a6a5c90345cec8a098abbc75b164a98c9f2a84be843e0407b3e35e2d6c7cbe59f38addf2cd848d"
   ]
  },
  {
   "name": "local",
   "request_topic": "local",
   "request": "01010001116a7a6f22b9a89c000001a3185c5000101112131415161718191a1b1c1d1e1f981efd17c8e7b8cbd49ea5594fe3e9ac552c52025adaffb27f746a6232b2722fce9d22a12446864524644bf3ada2bd8194c876c7e7339d79898b761da7509554d6ffab38da44e1a1b70ada5dad03a4c7789baf59c3419708d5fdb5a1d33afca02928c6667f1e8448ccbc6761428911d18222923e6f7378518d8cf1befd5818fcb357d768a2770f8f0c246465daf36315b7f429be122654a94bb9aab93127f1765e3fc8b8abc334523a1fad29a12cfc96229ffea4a8cc22e322a3ad52903405425b216326fc531d450f5c0285d9c47884565025c5337959c7a858ed55a906d983e115b9ad884da5ebbaba7aeaaece1a5270c804d9af37c9262033376cbd4c2254d6c3",
   "expect_body": "{\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"max_tokens\":16}",
   "expect_resp_topic": "local",
   "expect_req_id": "101112131415161718191a1b1c1d1e1f",
   "expect_client_pub": "e7f162a10bec559afea195e4dce84b69568d5d2cb0963eb446c0685e2b17f2f0",
   "resp_secret": "f53386dd0394ec96df5720d25d03d5fde706deeed2aa51b28523fa7dc524df9c",
   "response_nonce": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
   "response_chunks": [
    "01020000101112131415161718191a1b1c1d1e1faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa00000000943f308b238592243c79409d0a27af8a112844a4db9b6b3a15538ac01435e154703c6302776f61a144642b2aa6db46b4887e692b7d94c9c5cf520c66e13be2ec12",
    "01020100101112131415161718191a1b1c1d1e1faaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa0000000112f39f766f057a51dc2b2d3797cd498cff58b156aa4eb6042d1b8b9292130c5ccdbac39700c7d85bc4adc9cec612860c014c2c71cd042c21a8771938f4d2d29a9ded948f4bcdc1bf2da78e"
   ]
  }
 ]
}'''
V: dict[str, Any] = json.loads(VECTORS_JSON)
CASES = {case["name"]: case for case in V["cases"]}


def _hex(key: str, source: dict[str, Any] = V) -> bytes:
    return bytes.fromhex(source[key])


class VectorPrekeys:
    """Holds exactly the vector prekey, live at the vector's `now`."""

    retention_s = 3600.0

    def __init__(self) -> None:
        self.private = X25519PrivateKey.from_private_bytes(_hex("prekey_sk"))
        self.prekey_id = wire.prekey_id(self.private.public_key().public_bytes_raw())

    def lookup(self, prekey_id: bytes, now: float) -> X25519PrivateKey | None:
        return self.private if prekey_id == self.prekey_id and now < V["prekey_not_after"] else None


class VectorClients:
    def __init__(self, prefix: str) -> None:
        pub = _hex("client_pub")
        self.client = AllowedClient(label="vector-client", public_key=pub,
                                    verify_key=Ed25519PublicKey.from_public_bytes(pub),
                                    response_prefix=prefix, expires_at=None, requests_per_minute=None)

    def lookup(self, client_pub: bytes, now: float) -> AllowedClient | None:
        return self.client if client_pub == self.client.public_key else None


def _identity() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(_hex("device_identity_sk"))


def test_identity_and_client_public_keys_match_their_secrets() -> None:
    assert _identity().public_key().public_bytes_raw() == _hex("device_identity_pub")
    client = Ed25519PrivateKey.from_private_bytes(_hex("client_sk"))
    assert client.public_key().public_bytes_raw() == _hex("client_pub")


def test_prekey_record_builder_reproduces_the_vector_byte_for_byte() -> None:
    prekey_pub = X25519PrivateKey.from_private_bytes(_hex("prekey_sk")).public_key().public_bytes_raw()
    record = build_prekey_record(_identity(), device_id=V["device_id"], prekey_pub=prekey_pub,
                                 not_before=V["prekey_not_before"], not_after=V["prekey_not_after"])
    assert record.hex() == V["prekey_record"]


def test_prekey_record_vector_verifies() -> None:
    info = verify_prekey_record(_hex("prekey_record"), identity_pub=_hex("device_identity_pub"),
                                device_id=V["device_id"], now=V["now"])
    prekey_pub = X25519PrivateKey.from_private_bytes(_hex("prekey_sk")).public_key().public_bytes_raw()
    assert info.prekey_pub == prekey_pub
    assert info.prekey_id == wire.prekey_id(prekey_pub)
    assert (info.not_before, info.not_after) == (V["prekey_not_before"], V["prekey_not_after"])


@pytest.mark.parametrize("name", ["mqtt", "local"])
def test_device_opens_vector_request(name: str) -> None:
    case = CASES[name]
    prefix = "local" if name == "local" else "edged/clients/a"
    opened = open_request(
        _hex("request", case), device_id=V["device_id"], request_topic=case["request_topic"],
        identity_pub=_hex("device_identity_pub"), prekeys=VectorPrekeys(), allow_list=VectorClients(prefix),
        replay=ReplayCache(), now=V["now"],
    )
    assert opened.body.decode("utf-8") == case["expect_body"]
    assert opened.resp_topic == case["expect_resp_topic"]
    assert opened.req_id.hex() == case["expect_req_id"]
    assert opened.client_pub.hex() == case["expect_client_pub"]
    assert opened.resp_secret.hex() == case["resp_secret"]
    assert opened.client_label == "vector-client"


@pytest.mark.parametrize("name", ["mqtt", "local"])
def test_response_sealer_reproduces_vector_chunks(name: str) -> None:
    case = CASES[name]
    request = _hex("request", case)
    sealer = ResponseSealer(_hex("resp_secret", case), request[:36], request[36:68], case["expect_resp_topic"],
                            bytes.fromhex(case["expect_req_id"]), nonce=_hex("response_nonce", case))
    first, last = (text.encode("utf-8") for text in V["response_plaintexts"])
    assert sealer.seal(first, final=False, error=False).hex() == case["response_chunks"][0]
    assert sealer.seal(last, final=True, error=False).hex() == case["response_chunks"][1]


@pytest.mark.parametrize("name", ["mqtt", "local"])
def test_response_opener_accepts_vector_chunks(name: str) -> None:
    case = CASES[name]
    request = _hex("request", case)
    opener = ResponseOpener(_hex("resp_secret", case), request[:36], request[36:68], case["expect_resp_topic"])
    first = opener.open(bytes.fromhex(case["response_chunks"][0]))
    assert (first.seq, first.final, first.error) == (0, False, False)
    assert first.plaintext.decode("utf-8") == V["response_plaintexts"][0]
    assert not opener.complete
    last = opener.open(bytes.fromhex(case["response_chunks"][1]))
    assert (last.seq, last.final, last.error) == (1, True, False)
    assert last.plaintext.decode("utf-8") == V["response_plaintexts"][1]
    assert opener.complete


def test_response_kat_from_the_crypto_research() -> None:
    """resp_secret 00..1f, header||enc = 68 zero bytes, nonce 16 x AA, topic "t", FINAL, "hi"."""
    header = bytes(36)
    sealer = ResponseSealer(bytes(range(32)), header, bytes(32), "t", bytes(16), nonce=b"\xaa" * 16)
    chunk = sealer.seal(b"hi", final=True)
    assert chunk.hex() == ("0102010000000000000000000000000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                           "000000004a9bb82d6d9da850176662b0b0f255667d29")
