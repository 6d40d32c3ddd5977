"""Check a bundle before anything is installed: SHA256SUMS over every file, and optionally its signature.

The signature is a DSSE envelope (the format of edged's signed releases, edged/fleet/dsse.py) over
the exact bytes of SHA256SUMS, signed by a threshold of the release keys of the fleet's trust root.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

from edged_install import ed25519

SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
SUMS_PAYLOAD_TYPE = "application/vnd.edged.bundle-sums+text"
ROOT_PAYLOAD_TYPE = "application/vnd.edged.root+json"
MAX_DOCUMENT_BYTES = 64 * 1024
PATH_PATTERN = r"[A-Za-z0-9._+/-]+"  # a bundle file's name; scripts/bundle refuses to ship any other
_LINE = re.compile(rf"([0-9a-f]{{64}})  ({PATH_PATTERN})")


class BundleError(Exception):
    """The bundle is not what it claims to be; nothing has been installed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def parse_sums(text: str) -> dict[str, str]:
    """``sha256sum`` format, one ``<hex>  <relative path>`` per line; no absolute paths, no ``..``."""
    listed: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        match = _LINE.fullmatch(line)
        if not match or match[2].startswith("/") or ".." in match[2].split("/") or match[2] in listed:
            raise BundleError(f"{SUMS} line {number} is malformed: {line[:100]!r}")
        listed[match[2]] = match[1]
    if not listed:
        raise BundleError(f"{SUMS} lists no files")
    return listed


def check_sums(bundle: Path) -> dict[str, str]:
    """Every listed file has its hash and no other file is present; returns the listing."""
    try:
        listed = parse_sums((bundle / SUMS).read_text(encoding="ascii"))
    except FileNotFoundError:
        raise BundleError(f"{bundle / SUMS} is missing: this is not a complete edged bundle") from None
    except UnicodeDecodeError:
        raise BundleError(f"{SUMS} is not ASCII text") from None
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() or p.is_symlink()}
    extra = sorted(present - set(listed) - {SUMS, SIGNATURE})
    if extra:
        raise BundleError(f"files not listed in {SUMS}: {', '.join(extra[:5])} (remove them or unpack the bundle afresh)")
    for name, expected in sorted(listed.items()):
        path = bundle / name
        if path.is_symlink() or not path.is_file():
            raise BundleError(f"{name} is listed in {SUMS} but missing (or not a plain file)")
        if sha256_file(path) != expected:
            raise BundleError(f"{name} does not match its SHA-256 in {SUMS}: the bundle is corrupt; "
                              "copy it again and compare with the published checksum")
    return listed


def pae(payload_type: str, payload: bytes) -> bytes:
    type_bytes = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise BundleError(f"{what} is not a string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BundleError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise BundleError(f"{what} is not canonical base64")
    return raw


def _load_json(data: bytes, what: str) -> dict:
    def no_duplicates(pairs: list) -> dict:
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key")
        return dict(pairs)

    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:  # a few kilobytes of nested brackets are enough
        raise BundleError(f"{what} is nested too deeply to be a signed document") from None
    if not isinstance(document, dict):
        raise BundleError(f"{what} is not a JSON object")
    return document


def verify_envelope(data: bytes, payload_type: str, keys: list[str], threshold: int, what: str) -> bytes:
    """The payload, once ``threshold`` distinct keys among ``keys`` (raw hex) signed it."""
    if len(data) > MAX_DOCUMENT_BYTES:
        raise BundleError(f"{what} is over {MAX_DOCUMENT_BYTES} bytes")
    envelope = _load_json(data, what)
    if set(envelope) != {"payloadType", "payload", "signatures"} or not isinstance(envelope["signatures"], list):
        raise BundleError(f"{what} is not a signed envelope (payloadType, payload, signatures)")
    if envelope["payloadType"] != payload_type:
        raise BundleError(f"{what} carries {str(envelope['payloadType'])[:64]!r}, expected {payload_type!r}")
    payload = _b64(envelope["payload"], f"{what} payload")
    by_keyid = {hashlib.sha256(bytes.fromhex(key)).hexdigest(): bytes.fromhex(key) for key in keys}
    message = pae(payload_type, payload)
    valid: set[str] = set()
    for signature in envelope["signatures"]:
        if (not isinstance(signature, dict) or set(signature) != {"keyid", "sig"}
                or not isinstance(signature["keyid"], str)):
            raise BundleError(f"{what} has a malformed signature entry")
        public = by_keyid.get(signature["keyid"])
        if public is not None and ed25519.verify(public, message, _b64(signature["sig"], f"{what} signature")):
            valid.add(signature["keyid"])
    if len(valid) < threshold:
        raise BundleError(f"{what}: {len(valid)} valid signature(s) from trusted keys, {threshold} needed")
    return payload


def _role(root: dict, name: str) -> tuple[list[str], int]:
    role = root.get(name)
    threshold = role.get("threshold") if isinstance(role, dict) else None
    if not isinstance(role, dict) or not isinstance(role.get("keys"), list) or type(threshold) is not int:
        raise BundleError(f"trust root: [{name}] is malformed")
    keys = role["keys"]
    well_formed = all(isinstance(k, str) and re.fullmatch(r"[0-9a-f]{64}", k) for k in keys)
    if not well_formed or not 1 <= role["threshold"] <= len(keys):
        raise BundleError(f"trust root: [{name}] keys or threshold are malformed")
    return keys, role["threshold"]


def load_root(path: Path, now: datetime | None = None) -> tuple[list[str], int]:
    """Release keys and threshold of a self-signed, unexpired trust root (`edged fleet init`'s root.json)."""
    try:
        data = path.read_bytes()[: MAX_DOCUMENT_BYTES + 1]
    except OSError as exc:
        raise BundleError(f"cannot read the trust root {path}: {exc.strerror}") from None
    envelope = _load_json(data, f"trust root {path}")
    root = _load_json(_b64(envelope.get("payload"), "trust root payload"), "trust root payload")
    root_keys, root_threshold = _role(root, "root")
    verify_envelope(data, ROOT_PAYLOAD_TYPE, root_keys, root_threshold, f"trust root {path}")
    expires = root.get("expires")
    try:
        moment = datetime.strptime(str(expires), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise BundleError("trust root: expires is malformed") from None
    if (now or datetime.now(timezone.utc)) >= moment:
        raise BundleError(f"trust root v{root.get('version')} expired at {expires} (or this machine's clock is wrong)")
    return _role(root, "release")


def check_signature(bundle: Path, root_path: Path) -> int:
    """Refuse unless SHA256SUMS.sig is signed by the root's release keys over this SHA256SUMS; returns the key count."""
    keys, threshold = load_root(root_path)
    try:
        envelope = (bundle / SIGNATURE).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"the bundle has no {SIGNATURE}: it is unsigned (built without --sign-with)") from None
    payload = verify_envelope(envelope, SUMS_PAYLOAD_TYPE, keys, threshold, SIGNATURE)
    if payload != (bundle / SUMS).read_bytes():
        raise BundleError(f"{SIGNATURE} signs a different {SUMS} than this bundle's")
    return threshold
