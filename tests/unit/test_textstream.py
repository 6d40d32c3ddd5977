"""Incremental detokenisation and stop sequences."""

from hypothesis import given, strategies as st

from edged.engines.textstream import TextStream


def test_split_utf8_is_joined():
    stream = TextStream(())
    data = "héllo €".encode()
    out = "".join(stream.feed(data[i:i + 1]) for i in range(len(data))) + stream.flush()
    assert out == "héllo €"


def test_stop_sequence_across_pieces():
    stream = TextStream(("STOP",))
    out = ""
    for piece in ["one ", "two S", "TO", "P three"]:
        out += stream.feed(piece.encode())
        if stream.stopped:
            break
    assert stream.stopped and out == "one two "
    assert stream.flush() == ""


def test_held_back_prefix_released_at_end():
    stream = TextStream(("STOP",))
    out = stream.feed(b"abc ST")
    assert not stream.stopped
    assert out + stream.flush() == "abc ST"


@given(st.text(max_size=50), st.lists(st.integers(1, 5), max_size=20))
def test_no_stop_preserves_text(text, cuts):
    stream = TextStream(("\x00never",))
    data, out, i = text.encode(), "", 0
    for cut in cuts:
        out += stream.feed(data[i:i + cut])
        i += cut
    out += stream.feed(data[i:]) + stream.flush()
    assert out == text
