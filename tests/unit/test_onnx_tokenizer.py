"""The ONNX engine's byte-level BPE tokenizer against llama.cpp's, on the demo model's own vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edged.convert.gguf_source import GgufSource
from edged.convert.tokenizer_export import tokenizer_json
from edged.engines.base import EngineSettings
from edged.engines.llama import LlamaEngine
from edged.engines.onnx_tokenizer import ByteBpeTokenizer
from edged.errors import EngineError
from edged.paths import demo_model_path

pytestmark = pytest.mark.slow  # loads the real model through llama.cpp

TRICKY = [
    "Hello world", "  leading spaces and  double  ", "numbers 12345 and 3.14159, x2", "",
    " ", "\n", "tabs\tand\nnewlines\n\n\n  x", "don't won't I'm we've they'll she'd it's IT'S",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n", "<|im_end|><|im_end|>x<|endoftext|>",
    "Ünïcödé ça va? 日本語のテキスト 😀 emoji", "½ ² ③ Ⅻ numbers", "a\u2003b\u3000c\u00a0d",
    "def f(x):\n    return x**2  # comment", "CamelCaseIdentifiers_with_underscores = foo(bar)",
    "\x1c\x1d separators", "ﬁ ligature, e\u0301 combining", "   \n  \t", "!!!???...---",
]
# Characters whose Unicode categories Python and llama.cpp agree on (no recently assigned code points).
SAFE = st.one_of(st.characters(min_codepoint=0x20, max_codepoint=0x24F), st.sampled_from(
    list("\t\n\r\u00a0\u2003\u3000日本語中文한국어ДаΩλ😀🎉²½③\u0301") + ["'s", "'ll", "<|im_end|>", "<|im_start|>"]))


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> tuple[ByteBpeTokenizer, LlamaEngine]:
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_text(json.dumps(tokenizer_json(GgufSource(demo_model_path()).tokenizer)))
    llama = LlamaEngine(demo_model_path())
    llama.load(EngineSettings(threads=1, context=256))
    yield ByteBpeTokenizer.from_file(path), llama
    llama.unload()


@pytest.mark.parametrize("text", TRICKY)
def test_same_tokens_as_llama_cpp(tokenizers, text):
    mine, llama = tokenizers
    assert mine.encode(text) == llama.tokenize(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(SAFE, max_size=40).map("".join))
def test_same_tokens_as_llama_cpp_on_generated_text(tokenizers, text):
    mine, llama = tokenizers
    assert mine.encode(text) == llama.tokenize(text)


# SmolLM2 has no tokens for some control bytes (0x04, 0x06, 0x13, 0x14, 0x16, 0x1d) nor for the UTF-8
# lead bytes 0xf1/0xf2 (code points U+40000 to U+BFFFF): any other text survives a round trip.
ENCODABLE = st.one_of(st.characters(max_codepoint=0x3FFFF, exclude_categories=("Cs", "Cc")),
                      st.sampled_from("\t\n\r"))


@settings(max_examples=200, deadline=None)
@given(st.text(ENCODABLE, max_size=60))
def test_decoding_restores_any_text(tokenizers, text):
    mine, _ = tokenizers
    assume("<|" not in text)  # added tokens written in text become (silent) special tokens
    assert mine.decode(mine.encode(text)) == text


def test_bytes_missing_from_the_vocabulary_are_dropped_like_llama_cpp(tokenizers):
    mine, llama = tokenizers
    assert mine.encode("a\x16b") == llama.tokenize("a\x16b") == mine.encode("a") + mine.encode("b")


def test_special_tokens_are_silent_when_generated(tokenizers):
    mine, _ = tokenizers
    assert mine.piece(mine.added["<|im_end|>"]) == b""
    assert mine.texts[mine.added["<|im_end|>"]] == "<|im_end|>"
    assert mine.piece(mine.encode(" the")[0]) == b" the"


def write_spec(tmp_path: Path, change: dict) -> Path:
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}
    spec.update(change)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_small_byte_level_file_loads(tmp_path):
    tokenizer = ByteBpeTokenizer.from_file(write_spec(tmp_path, {}))
    assert tokenizer.encode("abab") == [2, 2] and tokenizer.size == 3


@pytest.mark.parametrize("change,words", [
    ({"normalizer": {"type": "NFC"}}, "normalizer"),
    ({"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}}, "pre_tokenizer"),
    ({"model": {"type": "Unigram", "vocab": []}}, "model"),
    ({"extra": 1}, "extra"),
])
def test_unsupported_tokenizer_files_are_named(tmp_path, change, words):
    with pytest.raises(EngineError, match=f"tokenizer.json.*{words}"):
        ByteBpeTokenizer.from_file(write_spec(tmp_path, change))
