"""Unix socket framing (e2e-v1 §6): every malformed frame is a BadRequest, never a crash."""

import asyncio

import pytest

from edged.errors import BadRequest
from edged.transports.framing import KIND_CONTROL, KIND_JSON, encode_frame, encode_json, read_frame


def _read(data: bytes, max_frame: int = 1024):
    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader, max_frame)

    return asyncio.run(run())


def test_round_trip():
    assert _read(encode_json(KIND_JSON, {"a": 1})) == (KIND_JSON, b'{"a":1}')


def test_clean_eof_is_none():
    assert _read(b"") is None


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x00", "length field"),
    (b"\x00\x00\x00\x00", "length 0"),
    (b"\x00\x00\x10\x00" + b"\x02" * 10, "exceeds"),
    (b"\x00\x00\x00\x05\x02ab", "cut short"),
    (encode_frame(0x07, b"{}"), "unknown frame kind"),
    (encode_frame(0x00, b""), "unknown frame kind"),
])
def test_malformed(data, reason):
    with pytest.raises(BadRequest, match=reason):
        _read(data)


def test_control_kind_accepted():
    assert _read(encode_frame(KIND_CONTROL, b"{}"))[0] == KIND_CONTROL


def test_stalled_frame_body_times_out(monkeypatch):
    from edged.transports import framing

    monkeypatch.setattr(framing, "FRAME_BODY_TIMEOUT_S", 0.05)

    async def run():
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x00\x00\x00\x10\x02{")  # 16 bytes announced, 2 sent, then nothing
        return await read_frame(reader)

    with pytest.raises(BadRequest, match="not complete within"):
        asyncio.run(run())
