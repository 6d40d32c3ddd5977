"""Byte-level BPE (GPT-2, StarCoder, SmolLM2) from a tokenizer.json, without the `tokenizers` package."""

from __future__ import annotations

import re
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

from edged.engines.onnx_config import MAX_TOKENIZER_BYTES, ByteLevelPre, DigitsPre, TokenizerFile, read_json_file
from edged.errors import EngineError

# Unicode White_Space, as Rust's regex `\s` (used by Hugging Face tokenizers and llama.cpp) defines it;
# Python's `\s` also matches \x1c-\x1f, which would split differently.
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
WORD_CACHE = 1 << 16


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def _ranges(codepoints: list[int]) -> str:
    """A regex character-class body for these code points, as ranges."""
    parts, start = [], None
    for i, cp in enumerate(codepoints):
        if start is None:
            start = cp
        if i + 1 == len(codepoints) or codepoints[i + 1] != cp + 1:
            parts.append(re.escape(chr(start)) + ("" if cp == start else "-" + re.escape(chr(cp))))
            start = None
    return "".join(parts)


@lru_cache(maxsize=1)
def _classes() -> tuple[str, str]:
    """Classes for \\p{L} and \\p{N}, which Python's `re` lacks, built from unicodedata once per process."""
    letters, numbers = [], []
    for cp in range(sys.maxunicode + 1):
        cat = unicodedata.category(chr(cp))
        if cat[0] == "L":
            letters.append(cp)
        elif cat[0] == "N":
            numbers.append(cp)
    return f"[{_ranges(letters)}]", f"[{_ranges(numbers)}]"


@lru_cache(maxsize=1)
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The GPT-2 split regex `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+`."""
    letter, number = _classes()
    space, other = f"[{WHITESPACE}]", f"[^{WHITESPACE}{letter[1:-1]}{number[1:-1]}]"
    gpt2 = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?{letter}+| ?{number}+| ?{other}+|{space}+(?![^{WHITESPACE}])|"
                      rf"{space}+")
    return gpt2, re.compile(f"({number})")


class ByteBpeTokenizer:
    def __init__(self, spec: TokenizerFile) -> None:
        stages = spec.pre_tokenizer.pretokenizers if spec.pre_tokenizer.type == "Sequence" else [spec.pre_tokenizer]
        if not isinstance(stages[-1], ByteLevelPre) or any(not isinstance(s, DigitsPre) for s in stages[:-1]):
            raise EngineError("tokenizer.json: only [Digits(individual_digits),] ByteLevel pre-tokenizers "
                              "are supported")
        self._split_digits = len(stages) == 2
        self._gpt2, self._digits = _patterns()
        model = spec.model
        self._vocab: dict[str, int] = dict(model.vocab)
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, merge in enumerate(model.merges):
            pair = merge.split(" ") if isinstance(merge, str) else merge
            if len(pair) != 2:
                raise EngineError(f"tokenizer.json: merge {rank} ({merge!r}) is not a pair")
            self._ranks.setdefault((pair[0], pair[1]), rank)
        self._byte_char = bytes_to_unicode()
        char_byte = {c: b for b, c in self._byte_char.items()}
        self.added = {t.content: t.id for t in spec.added_tokens}
        self.size = max([*self._vocab.values(), *self.added.values()]) + 1
        # What each id prints when generated: bytes for vocab tokens, nothing for special (control) tokens.
        self._pieces: list[bytes] = [b""] * self.size
        self.texts: list[str] = [""] * self.size
        for text, i in self._vocab.items():
            self.texts[i] = text
            self._pieces[i] = (bytes(char_byte[c] for c in text) if all(c in char_byte for c in text)
                               else text.encode())
        for token in spec.added_tokens:
            self.texts[token.id] = token.content
            self._pieces[token.id] = b"" if token.special else token.content.encode()
        self.special_ids = frozenset(t.id for t in spec.added_tokens if t.special)
        names = sorted(self.added, key=len, reverse=True)
        self._special = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_file(cls, path: Path) -> ByteBpeTokenizer:
        return cls(read_json_file(path, TokenizerFile, MAX_TOKENIZER_BYTES))

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; added tokens (e.g. <|im_start|>) written in the text become their ids."""
        ids: list[int] = []
        parts = self._special.split(text) if self._special else [text]
        for index, part in enumerate(parts):
            if index % 2:  # re.split puts the captured special tokens at odd positions
                ids.append(self.added[part])
                continue
            segments = [s for s in self._digits.split(part) if s] if self._split_digits else [part]
            for segment in segments:
                for word in self._gpt2.findall(segment):
                    ids.extend(self._word(word))
        return ids

    def _word(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        symbols = [self._byte_char[b] for b in word.encode("utf-8")]
        ranks = self._ranks
        while len(symbols) > 1:
            best, best_rank = -1, len(ranks)
            for i in range(len(symbols) - 1):
                rank = ranks.get((symbols[i], symbols[i + 1]), best_rank)
                if rank < best_rank:
                    best, best_rank = i, rank
            if best < 0:
                break
            first, second = symbols[best], symbols[best + 1]
            merged, i = [], 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i + 1 < len(symbols) and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        vocab = self._vocab
        if all(s in vocab for s in symbols):
            ids = tuple(vocab[s] for s in symbols)
        else:
            # Some vocabularies lack a few byte tokens (SmolLM2 has none for bytes like 0x16): llama.cpp
            # then falls back to the symbol's characters and drops those it cannot find; so does edged.
            ids = tuple(vocab[c] for s in symbols for c in ([s] if s in vocab else s) if c in vocab)
        if len(self._cache) < WORD_CACHE:
            self._cache[word] = ids
        return ids

    def piece(self, token: int) -> bytes:
        """The bytes a generated token adds to the text (empty for special tokens)."""
        return self._pieces[token] if 0 <= token < self.size else b""

    def decode(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")
