"""Client library for e2e-v1, pure (no sockets): verify a prekey record, seal, open the response."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged.crypto.envelope import seal_request
from edged.crypto.prekey import PrekeyInfo, verify_prekey_record
from edged.errors import PrekeyRecordRejected
from edged.crypto.response import OpenedChunk, ResponseOpener

__all__ = ["OpenedChunk", "PrekeyInfo", "PrekeyRecordRejected", "ResponseOpener", "SealedRequest",
           "verify_prekey_record"]


@dataclass(frozen=True, slots=True)
class SealedRequest:
    """The bytes to send and the opener that will accept this request's response chunks."""

    data: bytes
    req_id: bytes
    opener: ResponseOpener

    @classmethod
    def build(cls, *, client_key: Ed25519PrivateKey, prekey: PrekeyInfo, identity_pub: bytes,
              request_topic: str, resp_topic: str, body: bytes, ts_ms: int | None = None,
              req_id: bytes | None = None, resp_secret: bytes | None = None) -> SealedRequest:
        """Seal ``body`` (UTF-8 JSON, ideally from ``padding.pad_json``) to a verified prekey.

        ``request_topic`` is the exact MQTT topic it will be published to (``local`` on the Unix
        socket); ``resp_topic`` is where the device should publish the response (``local`` too on
        the socket). ``ts_ms``, ``req_id`` and ``resp_secret`` are random/current unless given.
        A retry after an unclear failure must build a new request, never resend this one.
        """
        parts = seal_request(
            client_key=client_key, prekey_pub=prekey.prekey_pub, identity_pub=identity_pub,
            device_id=prekey.device_id, request_topic=request_topic, resp_topic=resp_topic, body=body,
            ts_ms=ts_ms, req_id=req_id, resp_secret=resp_secret,
        )
        opener = ResponseOpener(parts.resp_secret, parts.header, parts.enc, parts.resp_topic)
        return cls(data=parts.request, req_id=parts.req_id, opener=opener)

    def __repr__(self) -> str:
        return f"SealedRequest(req_id={self.req_id.hex()}, bytes={len(self.data)})"
