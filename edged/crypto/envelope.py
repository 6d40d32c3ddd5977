"""e2e-v1 requests: sealing (client) and the ten ordered device checks of spec section 3."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from edged.crypto import wire
from edged.crypto.clock import ClockPolicy
from edged.crypto.replay import ReplayCache, ReplayVerdict
from edged.crypto.response import ResponseSealer
from edged.crypto.response_topic import response_topic_allowed
from edged.errors import ClockNotSynchronised, EnvelopeRejected, InnerParseError
from edged.topics import LOCAL_TOPIC
from edged.crypto.settings import DEFAULT_WINDOW as DEFAULT_WINDOW, TimestampWindow as TimestampWindow

# The spec's module-level suite; tests swap it to prove the size check runs before any crypto.
_SUITE = wire.HPKE_SUITE




class PrekeyLookup(Protocol):
    """What open_request needs from the prekey ring."""

    @property
    def retention_s(self) -> float:
        """Longest time any prekey stays usable after it is made (bounds replay when unsynced)."""

    def lookup(self, prekey_id: bytes, now: float) -> X25519PrivateKey | None: ...


class AllowedClientView(Protocol):
    """What open_request reads from an allow-list entry."""

    @property
    def label(self) -> str: ...
    @property
    def verify_key(self) -> Ed25519PublicKey: ...
    @property
    def response_prefix(self) -> str: ...
    @property
    def requests_per_minute(self) -> int | None: ...


class ClientLookup(Protocol):
    def lookup(self, client_pub: bytes, now: float) -> AllowedClientView | None: ...


@dataclass(frozen=True, slots=True)
class SealedRequestParts:
    """A sealed request and what the client keeps to open the response stream."""

    request: bytes
    header: bytes
    enc: bytes
    resp_secret: bytes
    req_id: bytes
    resp_topic: str


@dataclass(frozen=True, slots=True)
class OpenedRequest:
    """An admitted request: every field was authenticated by checks 1-10."""

    client_pub: bytes
    client_label: str
    requests_per_minute: int | None
    req_id: bytes
    ts_ms: int
    prekey_id: bytes
    resp_topic: str
    body: bytes
    header: bytes
    enc: bytes
    resp_secret: bytes
    rate_limited: bool = False  # over the client's requests per minute: answer busy; it took no replay entry

    def response_sealer(self, nonce: bytes | None = None) -> ResponseSealer:
        """A sealer for this request's response stream, with a fresh random nonce by default."""
        return ResponseSealer(self.resp_secret, self.header, self.enc, self.resp_topic, self.req_id, nonce)

    def __repr__(self) -> str:
        # Never let the body or the response secret reach a log line through repr().
        return (f"OpenedRequest(client_label={self.client_label!r}, req_id={self.req_id.hex()}, "
                f"resp_topic={self.resp_topic!r}, body_bytes={len(self.body)})")


def seal_request(*, client_key: Ed25519PrivateKey, prekey_pub: bytes, identity_pub: bytes, device_id: str,
                 request_topic: str, resp_topic: str, body: bytes, ts_ms: int | None = None,
                 req_id: bytes | None = None, resp_secret: bytes | None = None) -> SealedRequestParts:
    """Build request = header || HPKE-Seal(prekey_pub, info, inner); random parts are injectable."""
    req_id = os.urandom(wire.REQ_ID_LEN) if req_id is None else req_id
    resp_secret = os.urandom(wire.RESP_SECRET_LEN) if resp_secret is None else resp_secret
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    if len(req_id) != wire.REQ_ID_LEN:
        raise ValueError("req_id must be 16 bytes")
    if len(body) > 0xFFFFFFFF:
        raise ValueError("body too long for a 4-byte length")
    header = wire.RequestHeader(wire.VERSION, wire.TYPE_REQUEST, wire.SUITE_X25519_SHA256_CHACHA,
                                wire.prekey_id(prekey_pub), ts_ms, req_id).pack()
    info = wire.request_info(device_id, request_topic, header)
    client_pub = client_key.public_key().public_bytes_raw()
    unsigned = wire.inner_without_signature(client_pub, resp_secret, resp_topic.encode("utf-8"), body)
    signature = client_key.sign(wire.signature_message(identity_pub, info, unsigned))
    sealed = _SUITE.encrypt(unsigned + signature, X25519PublicKey.from_public_bytes(prekey_pub), info=info)
    return SealedRequestParts(request=header + sealed, header=header, enc=sealed[:wire.ENC_LEN],
                              resp_secret=resp_secret, req_id=req_id, resp_topic=resp_topic)


def open_request(data: bytes, *, device_id: str, request_topic: str, identity_pub: bytes,
                 prekeys: PrekeyLookup, allow_list: ClientLookup, replay: ReplayCache, now: float,
                 window: TimestampWindow = DEFAULT_WINDOW, max_size: int = wire.DEFAULT_MAX_REQUEST_BYTES,
                 clock_synchronised: bool = True, clock_policy: ClockPolicy = "reject",
                 within_rate: Callable[[bytes, int | None], bool] | None = None) -> OpenedRequest:
    """Run checks 1-10 of spec section 3 in order; the first failure raises EnvelopeRejected(check).

    ``now`` is the device's unix time in seconds. With an unsynchronised clock, a request that
    arrived over MQTT is refused (policy ``reject``) or admitted without the timestamp check, its
    replay entry then kept for the whole prekey retention (policy ``accept-unsynced``). Requests on
    the Unix socket share the device clock, so their timestamp is always checked.

    ``within_rate(client_pub, requests_per_minute)`` is the device's per-client rate limit, asked
    after check 9 and before the replay insert: a request over the client's rate is returned with
    ``rate_limited`` set (to be answered sealed with busy) and takes no replay-cache entry.
    """
    # 1. size, before any cryptography
    if not wire.MIN_REQUEST_LEN <= len(data) <= max_size:
        raise EnvelopeRejected("size", f"{len(data)} bytes, allowed {wire.MIN_REQUEST_LEN}..{max_size}")
    data = bytes(data)
    header_bytes = data[:wire.HEADER_LEN]
    header = wire.RequestHeader.unpack(header_bytes)
    # 2. version, type, suite
    if (header.version, header.type, header.suite) != (wire.VERSION, wire.TYPE_REQUEST,
                                                       wire.SUITE_X25519_SHA256_CHACHA):
        raise EnvelopeRejected("version", f"unsupported version {header.version}, type {header.type} "
                                          f"or suite 0x{header.suite:04x}")
    # 3. prekey known and live
    prekey = prekeys.lookup(header.prekey_id, now)
    if prekey is None:
        raise EnvelopeRejected("prekey", f"prekey {header.prekey_id.hex()} unknown or expired; "
                                         "the client must fetch the current prekey record")
    # 4. timestamp window (or the clock policy)
    is_local = request_topic == LOCAL_TOPIC
    replay_ttl_s = window.past_s + window.future_s + 1.0
    if clock_synchronised or is_local:
        age_ms = int(now * 1000) - header.ts_ms
        if age_ms > window.past_s * 1000 or -age_ms > window.future_s * 1000:
            raise EnvelopeRejected("timestamp", f"request timestamp is {age_ms / 1000:.3f} s old, window is "
                                                f"-{window.future_s:g}..{window.past_s:g} s; check the clocks")
    else:
        # "reject" still runs checks 5-10, so an authenticated sender learns why (ClockNotSynchronised).
        replay_ttl_s = prekeys.retention_s
    clock_refused = not (clock_synchronised or is_local) and clock_policy == "reject"
    # 5. HPKE open, with info rebuilt from our own id and the topic the message arrived on
    info = wire.request_info(device_id, request_topic, header_bytes)
    try:
        inner_bytes = _SUITE.decrypt(data[wire.HEADER_LEN:], prekey, info=info)
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeRejected("decrypt", "HPKE open failed (wrong prekey, device, topic or tampered)") from exc
    # 6. strict parse
    try:
        inner = wire.parse_inner(inner_bytes)
    except InnerParseError as exc:
        raise EnvelopeRejected("parse", str(exc)) from exc
    # 7. allow-list
    client = allow_list.lookup(inner.client_pub, now)
    if client is None:
        raise EnvelopeRejected("client", f"client key {wire.fingerprint(inner.client_pub)} is not on the "
                                         "allow-list or its entry expired")
    # 8. signature
    try:
        client.verify_key.verify(inner.signature, wire.signature_message(identity_pub, info, inner.signed_part))
    except InvalidSignature as exc:
        raise EnvelopeRejected("signature", f"bad signature for client {client.label!r}") from exc
    # 9. response topic
    reason = response_topic_allowed(inner.resp_topic, client.response_prefix, local=is_local)
    if reason is not None:
        raise EnvelopeRejected("response_topic", f"client {client.label!r}: {reason}")
    # The client's rate before its replay entry: a client over its rate cannot fill the cache.
    rate_limited = within_rate is not None and not within_rate(inner.client_pub, client.requests_per_minute)
    # 10. replay cache, only now that the request is authenticated
    verdict = (ReplayVerdict.FRESH if rate_limited
               else replay.check_and_insert(inner.client_pub, header.req_id, now=now, ttl_s=replay_ttl_s))
    if verdict is ReplayVerdict.CLIENT_FULL:
        raise EnvelopeRejected("replay", f"client {client.label!r} holds its whole share of the replay cache; "
                                         "it is sending faster than its entries expire")
    if verdict is ReplayVerdict.REPLAY:
        raise EnvelopeRejected("replay", f"request {header.req_id.hex()} from {client.label!r} seen before")
    if verdict is ReplayVerdict.FULL:
        raise EnvelopeRejected("replay", "replay cache full; refusing new requests until entries expire")
    opened = OpenedRequest(
        client_pub=inner.client_pub, client_label=client.label, requests_per_minute=client.requests_per_minute,
        req_id=header.req_id, ts_ms=header.ts_ms, prekey_id=header.prekey_id, resp_topic=inner.resp_topic,
        body=inner.body, header=header_bytes, enc=data[wire.HEADER_LEN:wire.HEADER_LEN + wire.ENC_LEN],
        resp_secret=inner.resp_secret, rate_limited=rate_limited,
    )
    if clock_refused:
        raise ClockNotSynchronised(opened)
    return opened
