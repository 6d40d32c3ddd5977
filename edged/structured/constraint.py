"""Per-token grammar masks for the engines: llguidance tokenizers built from each engine's vocabulary."""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Sequence

from edged.errors import EngineError
from edged.structured.grammar import GrammarCache

PIECE_BUFFER = 1024


def llama_tokenizer(lib: Any, vocab: Any) -> Any:
    """An llguidance tokenizer over a loaded llama.cpp vocabulary (about 0.5 s: build once per load).

    Control tokens are marked with a leading 0xff byte, as llguidance expects, so that a grammar can
    never produce them as text; tokenising goes through libllama's own llama_tokenize.
    """
    from llguidance import LLTokenizer

    buffer = ctypes.create_string_buffer(PIECE_BUFFER)
    control, user = lib.LLAMA_TOKEN_ATTR_CONTROL, lib.LLAMA_TOKEN_ATTR_USER_DEFINED
    tokens: list[bytes] = []
    for token in range(lib.llama_vocab_n_tokens(vocab)):
        n = lib.llama_token_to_piece(vocab, token, buffer, PIECE_BUFFER, 0, True)
        if n < 0:
            raise EngineError(f"token {token} is longer than {PIECE_BUFFER} bytes")
        piece = buffer.raw[:n]
        attr = lib.llama_token_get_attr(vocab, token)
        if attr & control or (attr & user and piece.startswith(b"<") and piece.endswith(b">")):
            piece = b"\xff" + piece
        tokens.append(piece)
    tokenize = ctypes.cast(lib._lib.llama_tokenize, ctypes.c_void_p).value
    # from_llamacpp is in the compiled module but not in its stubs (llguidance's own llamacpp.py calls it).
    return LLTokenizer.from_llamacpp(  # type: ignore[attr-defined]
        tokens=tokens, vocab_ptr=vocab, tokenize_fptr=tokenize, eos_token=lib.llama_vocab_eos(vocab), slices=None)


class _Vocabulary:
    """The duck type llguidance's TokenizerWrapper reads: token bytes, special ids and an encoder."""

    def __init__(self, pieces: Sequence[bytes], eos: int, bos: int | None, special: frozenset[int],
                 encode: Callable[[str], list[int]]) -> None:
        self.tokens = [b"\xff" + p if i in special else p for i, p in enumerate(pieces)]
        self.eos_token_id, self.bos_token_id = eos, bos
        self.special_token_ids = sorted(special)
        self._encode = encode

    def __call__(self, text: str) -> list[int]:
        return self._encode(text)


def bytes_tokenizer(pieces: Sequence[bytes], eos: int, bos: int | None, special: Sequence[int],
                    encode: Callable[[str], list[int]]) -> Any:
    """An llguidance tokenizer over any vocabulary given as the bytes of each token (the ONNX engine)."""
    from llguidance import LLTokenizer, TokenizerWrapper

    return LLTokenizer(TokenizerWrapper(_Vocabulary(pieces, eos, bos, frozenset(special), encode)))


class TokenMask:
    """One generation's grammar state: masks logits in place before sampling, then follows the choice."""

    def __init__(self, cache: GrammarCache, grammar: str, n_logits: int) -> None:
        import numpy as np  # not at import: the GGUF engine's start stays free of numpy

        self._np = np
        self._matcher = cache.matcher(grammar)
        self._words = np.full((n_logits + 31) // 32, -1, dtype=np.int32)
        self._n = n_logits

    def apply(self, logits: Any) -> None:
        """Set every token the grammar forbids next to -inf (the logits are float32, one per token)."""
        np = self._np
        self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        allowed = np.unpackbits(self._words.view(np.uint8), bitorder="little")[:self._n]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        if not self._matcher.consume_token(token):
            raise EngineError(f"the sampler chose token {token}, which the grammar forbids: "
                              f"{self._matcher.get_error()[:200]}")

    @property
    def finished(self) -> bool:
        """The grammar allows nothing more: the engine ends generation as at an end-of-generation token."""
        return bool(self._matcher.is_stopped())
