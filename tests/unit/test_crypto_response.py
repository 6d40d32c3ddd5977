"""The sealed response stream of e2e-v1 section 4: in-order acceptance and every tampering case."""

from __future__ import annotations

import os

import pytest

from edged.crypto.response import (
    FLAG_ERROR,
    FLAG_FINAL,
    ResponseOpener,
    ResponseSealer,
    StreamFinished,
)
from edged.errors import StreamError

TOPIC = "edged/clients/a/resp"


def _request_material(req_id: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    req_id = req_id or os.urandom(16)
    header = bytes([1, 1, 0, 1]) + os.urandom(8) + (1_800_000_000_000).to_bytes(8, "big") + req_id
    return os.urandom(32), header, os.urandom(32)


class Stream:
    """One request's sealer (device) and opener (client)."""

    def __init__(self, nonce: bytes | None = None) -> None:
        self.secret, self.header, self.enc = _request_material()
        self.req_id = self.header[20:36]
        self.sealer = ResponseSealer(self.secret, self.header, self.enc, TOPIC, self.req_id, nonce)
        self.opener = ResponseOpener(self.secret, self.header, self.enc, TOPIC)

    def chunks(self, count: int) -> list[bytes]:
        return [self.sealer.seal(f'{{"n":{i}}}'.encode(), final=i == count - 1) for i in range(count)]


def _flip(chunk: bytes, index: int, mask: int = 0x01) -> bytes:
    mutated = bytearray(chunk)
    mutated[index] ^= mask
    return bytes(mutated)


def test_in_order_stream_round_trips_and_completes() -> None:
    stream = Stream()
    chunks = stream.chunks(4)
    opened = [stream.opener.open(chunk) for chunk in chunks[:3]]
    assert [chunk.plaintext for chunk in opened] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert not stream.opener.complete
    last = stream.opener.open(chunks[3])
    assert last.final and not last.error and stream.opener.complete


def test_error_chunk_carries_final_and_error() -> None:
    stream = Stream()
    chunk = stream.sealer.seal(b'{"error":{"code":"busy","message":"queue full"}}', final=True, error=True)
    opened = stream.opener.open(chunk)
    assert opened.final and opened.error and stream.opener.complete


def test_sealer_refuses_after_final_and_error_without_final() -> None:
    stream = Stream()
    with pytest.raises(ValueError):
        stream.sealer.seal(b"{}", final=False, error=True)
    stream.sealer.seal(b"{}", final=True)
    assert stream.sealer.finished
    with pytest.raises(StreamFinished):
        stream.sealer.seal(b"{}", final=True)


def test_every_bit_flip_of_a_chunk_is_rejected() -> None:
    stream = Stream()
    chunk = stream.chunks(1)[0]
    for index in range(len(chunk)):
        for mask in (0x01, 0x80):
            with pytest.raises(StreamError):
                stream.opener.open(_flip(chunk, index, mask))
    assert stream.opener.open(chunk).final  # state untouched by the forgeries


def test_skipped_chunk_is_rejected_and_stream_stays_incomplete() -> None:
    stream = Stream()
    chunks = stream.chunks(3)
    stream.opener.open(chunks[0])
    with pytest.raises(StreamError, match="out-of-order"):
        stream.opener.open(chunks[2])
    assert not stream.opener.complete
    stream.opener.open(chunks[1])
    stream.opener.open(chunks[2])
    assert stream.opener.complete


def test_duplicate_chunk_is_rejected() -> None:
    stream = Stream()
    chunks = stream.chunks(3)
    stream.opener.open(chunks[0])
    stream.opener.open(chunks[1])
    with pytest.raises(StreamError, match="duplicate"):
        stream.opener.open(chunks[1])
    with pytest.raises(StreamError, match="duplicate"):
        stream.opener.open(chunks[0])


def test_first_chunk_must_be_seq_zero() -> None:
    stream = Stream()
    chunks = stream.chunks(2)
    with pytest.raises(StreamError):
        stream.opener.open(chunks[1])


def test_chunk_after_final_is_rejected() -> None:
    stream = Stream()
    chunks = stream.chunks(2)
    stream.opener.open(chunks[0])
    stream.opener.open(chunks[1])
    with pytest.raises(StreamError, match="after the FINAL"):
        stream.opener.open(chunks[1])


def test_forged_final_flag_is_rejected() -> None:
    stream = Stream()
    chunks = stream.chunks(3)
    stream.opener.open(chunks[0])
    with pytest.raises(StreamError, match="authentication"):
        stream.opener.open(_flip(chunks[1], 2, FLAG_FINAL))
    assert not stream.opener.complete


def test_forged_error_flag_is_rejected() -> None:
    stream = Stream()
    last = stream.chunks(1)[0]
    with pytest.raises(StreamError, match="authentication"):
        stream.opener.open(_flip(last, 2, FLAG_ERROR))


def test_error_flag_without_final_and_unknown_flags_are_rejected() -> None:
    stream = Stream()
    chunk = stream.chunks(2)[0]
    with pytest.raises(StreamError, match="ERROR flag"):
        stream.opener.open(_flip(chunk, 2, FLAG_ERROR))
    with pytest.raises(StreamError, match="unknown flag"):
        stream.opener.open(_flip(chunk, 2, 0x04))


def test_chunk_of_another_request_is_rejected() -> None:
    ours, theirs = Stream(), Stream()
    with pytest.raises(StreamError, match="another request"):
        ours.opener.open(theirs.chunks(1)[0])


def test_header_and_body_spliced_across_streams_are_rejected() -> None:
    ours, theirs = Stream(), Stream()
    our_chunk, their_chunk = ours.chunks(2)[0], theirs.chunks(2)[0]
    with pytest.raises(StreamError):
        ours.opener.open(our_chunk[:40] + their_chunk[40:])
    with pytest.raises(StreamError):
        ours.opener.open(their_chunk[:40] + our_chunk[40:])


def test_chunk_from_another_stream_of_the_same_request_is_rejected() -> None:
    """A replayed request gets a second stream with a new nonce; its chunks must not splice in."""
    stream = Stream()
    other = ResponseSealer(stream.secret, stream.header, stream.enc, TOPIC, stream.req_id)
    first = stream.sealer.seal(b'{"n":0}', final=False)
    stream.opener.open(first)
    other.seal(b'{"n":0}', final=False)
    with pytest.raises(StreamError, match="nonce changed"):
        stream.opener.open(other.seal(b'{"n":1}', final=True))


def test_changed_nonce_in_the_header_is_rejected() -> None:
    stream = Stream()
    chunks = stream.chunks(2)
    stream.opener.open(chunks[0])
    with pytest.raises(StreamError, match="nonce changed"):
        stream.opener.open(_flip(chunks[1], 20))


def test_replayed_request_never_reuses_the_response_keystream() -> None:
    stream = Stream()
    again = ResponseSealer(stream.secret, stream.header, stream.enc, TOPIC, stream.req_id)
    plaintext = b'{"choices":[{"delta":{"content":"same"}}]}'
    one, two = stream.sealer.seal(plaintext, final=True), again.seal(plaintext, final=True)
    assert one[20:36] != two[20:36]
    assert one[40:] != two[40:]


def test_wrong_response_topic_binding_fails() -> None:
    stream = Stream()
    opener = ResponseOpener(stream.secret, stream.header, stream.enc, TOPIC + "/elsewhere")
    with pytest.raises(StreamError):
        opener.open(stream.chunks(1)[0])


def test_short_and_foreign_chunks_are_rejected() -> None:
    stream = Stream()
    chunk = stream.chunks(1)[0]
    with pytest.raises(StreamError):
        stream.opener.open(chunk[:55])
    with pytest.raises(StreamError, match="version"):
        stream.opener.open(_flip(chunk, 1, 0x03))
    with pytest.raises(StreamError, match="reserved"):
        stream.opener.open(_flip(chunk, 3))


def test_sealer_checks_its_inputs() -> None:
    secret, header, enc = _request_material()
    with pytest.raises(ValueError):
        ResponseSealer(secret, header, enc, TOPIC, bytes(16))
    with pytest.raises(ValueError):
        ResponseSealer(secret, header, enc, TOPIC, header[20:36], nonce=bytes(8))
