"""The bundle installer's checks: its pure-Python Ed25519 against `cryptography`, SHA256SUMS, signatures."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bundle"))

from edged_install import ed25519, verify  # noqa: E402
from edged.fleet import dsse  # noqa: E402
from edged.fleet.depot.keystore import OperatorKeys, keyid_of_hex  # noqa: E402


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


@pytest.mark.parametrize("size", [0, 1, 31, 64, 1000])
def test_ed25519_accepts_what_cryptography_signs_and_nothing_else(size: int) -> None:
    key = Ed25519PrivateKey.generate()
    message = os.urandom(size)
    signature = key.sign(message)
    assert ed25519.verify(raw(key), message, signature)
    assert not ed25519.verify(raw(key), message + b"!", signature)
    assert not ed25519.verify(raw(Ed25519PrivateKey.generate()), message, signature)
    for position in (0, 31, 32, 63):
        flipped = bytearray(signature)
        flipped[position] ^= 0x40
        assert not ed25519.verify(raw(key), message, bytes(flipped))


def test_ed25519_refuses_non_canonical_s_and_bad_lengths() -> None:
    key = Ed25519PrivateKey.generate()
    signature = key.sign(b"m")
    s = int.from_bytes(signature[32:], "little") + ed25519.L  # same point equation, malleated encoding
    assert not ed25519.verify(raw(key), b"m", signature[:32] + s.to_bytes(32, "little"))
    assert not ed25519.verify(raw(key), b"m", signature[:63])
    assert not ed25519.verify(raw(key)[:31], b"m", signature)
    assert not ed25519.verify(b"\xff" * 32, b"m", signature)  # y >= p: not a point


def make_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "edged-0.1.0-linux-x86_64"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "wheels/a.whl").write_bytes(b"wheel a")
    (bundle / "install").write_text("#!/usr/bin/env python3\n")
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(bundle)}\n"
             for p in sorted(bundle.rglob("*")) if p.is_file()]
    (bundle / "SHA256SUMS").write_text("".join(lines))
    return bundle


def test_sums_accept_the_bundle_as_built(tmp_path: Path) -> None:
    assert set(verify.check_sums(make_bundle(tmp_path))) == {"install", "wheels/a.whl"}


@pytest.mark.parametrize("damage, message", [
    (lambda b: (b / "wheels/a.whl").write_bytes(b"wheel b"), "wheels/a.whl does not match"),
    (lambda b: (b / "wheels/a.whl").unlink(), "wheels/a.whl is listed"),
    (lambda b: (b / "wheels/extra.whl").write_bytes(b"x"), "files not listed in SHA256SUMS: wheels/extra.whl"),
    (lambda b: (b / "SHA256SUMS").unlink(), "is missing"),
    (lambda b: (b / "SHA256SUMS").write_text(f"{'0' * 64}  ../../etc/passwd\n"), "line 1 is malformed"),
    (lambda b: (b / "SHA256SUMS").write_text(f"{'0' * 64}  /etc/passwd\n"), "line 1 is malformed"),
    (lambda b: (b / "SHA256SUMS").write_text((b / "SHA256SUMS").read_text() * 2), "malformed"),
    (lambda b: (b / "SHA256SUMS").write_text(""), "lists no files"),
])
def test_sums_refuse_damage(tmp_path: Path, damage, message: str) -> None:
    bundle = make_bundle(tmp_path)
    damage(bundle)
    with pytest.raises(verify.BundleError, match=message.replace(".", r"\.")):
        verify.check_sums(bundle)


def fleet(tmp_path: Path, name: str, expires: datetime | None = None, release_threshold: int = 1) -> OperatorKeys:
    return OperatorKeys.create(tmp_path / name, root_keys=1, root_threshold=1, release_keys=2,
                               release_threshold=release_threshold,
                               expires=expires or datetime.now(timezone.utc) + timedelta(days=30))


def sign_bundle(bundle: Path, keys: OperatorKeys, count: int = 1) -> None:
    signers = keys.signing_keys("release", keys.current_root().release)[:count]
    payload = (bundle / "SHA256SUMS").read_bytes()
    (bundle / "SHA256SUMS.sig").write_bytes(dsse.sign(verify.SUMS_PAYLOAD_TYPE, payload, signers))


def test_signature_by_the_fleets_release_key_verifies(tmp_path: Path) -> None:
    bundle, keys = make_bundle(tmp_path), fleet(tmp_path, "keys")
    sign_bundle(bundle, keys)
    verify.check_sums(bundle)  # the signature file is not itself listed, and that is fine
    assert verify.check_signature(bundle, keys.root_path) == 1


def test_signature_below_the_release_threshold_is_refused(tmp_path: Path) -> None:
    bundle, keys = make_bundle(tmp_path), fleet(tmp_path, "keys", release_threshold=2)
    sign_bundle(bundle, keys, count=1)
    with pytest.raises(verify.BundleError, match="1 valid signature"):
        verify.check_signature(bundle, keys.root_path)
    sign_bundle(bundle, keys, count=2)
    assert verify.check_signature(bundle, keys.root_path) == 2


def test_root_that_is_expired_or_not_self_signed_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    old = fleet(tmp_path, "old", expires=datetime.now(timezone.utc) - timedelta(days=1))
    sign_bundle(bundle, old)
    with pytest.raises(verify.BundleError, match="expired"):
        verify.check_signature(bundle, old.root_path)
    keys, other = fleet(tmp_path, "keys"), fleet(tmp_path, "other")
    # keys' root payload under other's root signature: the root's own keys did not sign it.
    mixed = dsse.parse_envelope(other.root_path.read_bytes()).model_dump(by_alias=True)
    mixed["payload"] = dsse.parse_envelope(keys.root_path.read_bytes()).payload
    forged = tmp_path / "forged.json"
    forged.write_text(__import__("json").dumps(mixed))
    sign_bundle(bundle, keys)
    with pytest.raises(verify.BundleError, match="0 valid signature"):
        verify.check_signature(bundle, forged)


def test_signature_over_other_sums_or_of_another_type_is_refused(tmp_path: Path) -> None:
    bundle, keys = make_bundle(tmp_path), fleet(tmp_path, "keys")
    sign_bundle(bundle, keys)
    (bundle / "SHA256SUMS").write_text((bundle / "SHA256SUMS").read_text() + f"{'0' * 64}  more\n")
    with pytest.raises(verify.BundleError, match="signs a different SHA256SUMS"):
        verify.check_signature(bundle, keys.root_path)
    signers = keys.signing_keys("release", keys.current_root().release)
    (bundle / "SHA256SUMS.sig").write_bytes(dsse.sign("application/vnd.edged.release+json",
                                                      (bundle / "SHA256SUMS").read_bytes(), signers))
    with pytest.raises(verify.BundleError, match=r"expected 'application/vnd\.edged\.bundle-sums"):
        verify.check_signature(bundle, keys.root_path)
    (bundle / "SHA256SUMS.sig").unlink()
    with pytest.raises(verify.BundleError, match="unsigned"):
        verify.check_signature(bundle, keys.root_path)


ZERO_KEYID = hashlib.sha256(bytes(32)).hexdigest()  # the key id of the all-zero key the tests trust


def envelope(signatures: object, payload: object = "eA==", payload_type: object = verify.SUMS_PAYLOAD_TYPE) -> bytes:
    return json.dumps({"payloadType": payload_type, "payload": payload, "signatures": signatures}).encode()


@pytest.mark.parametrize("data, message", [
    (envelope([{"keyid": [], "sig": "AA=="}]), "malformed signature entry"),  # unhashable: was a TypeError
    (envelope([{"keyid": {"a": 1}, "sig": "AA=="}]), "malformed signature entry"),
    (envelope([{"keyid": ZERO_KEYID, "sig": 7}]), "signature is not a string"),
    (envelope([{"keyid": ZERO_KEYID, "sig": "AA"}]), "signature is not valid base64"),
    (envelope([{"keyid": ZERO_KEYID, "sig": "AA=="}]), "0 valid signature"),  # a short signature is just invalid
    (envelope([{"keyid": "00", "sig": "AA==", "extra": 1}]), "malformed signature entry"),
    (envelope(["not an object"]), "malformed signature entry"),
    (envelope({"keyid": "00"}), "not a signed envelope"),
    (envelope([], payload="eA"), "payload is not valid base64"),
    (envelope([], payload="eA==\n"), "payload is not valid base64"),
    (envelope([], payload_type=["x"]), "carries"),
    (envelope([])[:-7], "not valid JSON"),  # truncated
    (b'{"payloadType": "a", "payloadType": "b", "payload": "", "signatures": []}', "duplicate key"),
    (b"\xff\xfe{}", "not valid JSON"),
    (b"[" * 30000 + b"]" * 30000, "nested too deeply"),  # under the size cap: was a RecursionError
    (b" " * (verify.MAX_DOCUMENT_BYTES + 1), "is over 65536 bytes"),
    (envelope([]), "0 valid signature"),
])
def test_hostile_signature_file_is_refused_with_a_bundle_error(data: bytes, message: str) -> None:
    with pytest.raises(verify.BundleError, match=message):
        verify.verify_envelope(data, verify.SUMS_PAYLOAD_TYPE, ["00" * 32], 1, verify.SIGNATURE)


def root_file(tmp_path: Path, root: object) -> Path:
    path = tmp_path / "root.json"
    payload = base64.b64encode(json.dumps(root).encode()).decode()
    path.write_bytes(envelope([], payload=payload, payload_type=verify.ROOT_PAYLOAD_TYPE))
    return path


@pytest.mark.parametrize("root, message", [
    ([1], "payload is not a JSON object"),
    ({"release": {"keys": ["00" * 32], "threshold": 1}}, r"\[root\] is malformed"),
    ({"root": {"keys": ["00" * 32], "threshold": True}}, r"\[root\] is malformed"),  # bool is an int in Python
    ({"root": {"keys": ["00" * 32], "threshold": 2}}, r"\[root\] keys or threshold are malformed"),
    ({"root": {"keys": ["00" * 32], "threshold": 0}}, r"\[root\] keys or threshold are malformed"),
    ({"root": {"keys": ["XY" * 32], "threshold": 1}}, r"\[root\] keys or threshold are malformed"),
    ({"root": {"keys": [7], "threshold": 1}}, r"\[root\] keys or threshold are malformed"),
    ({"root": {"keys": ["00" * 32], "threshold": 1}}, "0 valid signature"),  # not signed by its own key
])
def test_hostile_trust_root_is_refused_with_a_bundle_error(tmp_path: Path, root: object, message: str) -> None:
    with pytest.raises(verify.BundleError, match=message):
        verify.load_root(root_file(tmp_path, root))


def test_unreadable_or_truncated_trust_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(verify.BundleError, match="cannot read the trust root"):
        verify.load_root(tmp_path / "absent.json")
    keys = fleet(tmp_path, "keys")
    truncated = tmp_path / "truncated.json"
    truncated.write_bytes(keys.root_path.read_bytes()[:-20])
    with pytest.raises(verify.BundleError, match="not valid JSON"):
        verify.load_root(truncated)


def test_bundle_signed_after_a_root_rotation_verifies_against_the_new_root(tmp_path: Path) -> None:
    # Devices hold the newest root; a rotated root is signed by the old and the new root keys.
    bundle, keys = make_bundle(tmp_path), fleet(tmp_path, "keys")
    first_root = tmp_path / "v1.root.json"
    first_root.write_bytes(keys.root_path.read_bytes())
    keys.rotate_root(expires=datetime.now(timezone.utc) + timedelta(days=30), add_release_keys=1,
                     remove_keyids=[keyid_of_hex(k) for k in keys.current_root().release.keys])
    sign_bundle(bundle, keys, count=1)
    assert verify.check_signature(bundle, keys.root_path) == 1
    with pytest.raises(verify.BundleError, match="0 valid signature"):
        verify.check_signature(bundle, first_root)  # v1's release keys were retired
