"""Write the GGUF's byte-level BPE vocabulary as a Hugging Face tokenizer.json, and pick the end-of-generation ids."""

from __future__ import annotations

from typing import Any

from edged.convert.gguf_source import TokenizerMeta
from edged.errors import ConfigError

# llama.cpp's pre-tokenizer names that mean "each digit alone, then the GPT-2 split".
DIGIT_SPLIT_PRES = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
GPT2_PRES = {"gpt-2", "gpt2"}
# GGUF token types (llama.cpp's llama_token_type).
UNKNOWN, CONTROL, USER_DEFINED = 2, 3, 4
# Control tokens that end a turn even when the GGUF does not name them as eos/eot (as llama.cpp does).
EOG_TEXTS = {"<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>",
             "<|eom_id|>", "</s>", "<EOT>", "<|return|>"}


def tokenizer_json(meta: TokenizerMeta) -> dict[str, Any]:
    if meta.model != "gpt2":
        raise ConfigError(f"tokenizer model {meta.model!r} is not supported: only byte-level BPE ('gpt2'); "
                          "SentencePiece ('llama') vocabularies are not")
    pre: dict[str, Any]
    if meta.pre in DIGIT_SPLIT_PRES:
        byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
        pre = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, byte_level]}
    elif meta.pre in GPT2_PRES:
        pre = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    else:
        raise ConfigError(f"pre-tokenizer {meta.pre!r} is not supported (supported: "
                          f"{', '.join(sorted(DIGIT_SPLIT_PRES | GPT2_PRES))})")
    if len(meta.token_type) != len(meta.tokens):
        raise ConfigError(f"{len(meta.tokens)} tokens but {len(meta.token_type)} token types")
    vocab: dict[str, int] = {}
    added = []
    for i, (text, kind) in enumerate(zip(meta.tokens, meta.token_type)):
        vocab.setdefault(text, i)
        if kind in (CONTROL, USER_DEFINED, UNKNOWN):
            added.append({"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": kind != USER_DEFINED})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": pre, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": meta.merges},
    }


def eog_ids(meta: TokenizerMeta) -> list[int]:
    """End-of-generation ids: eos, eot and eom if set, and control tokens that are known turn ends."""
    ids = {i for i in (meta.eos_token_id, meta.eot_token_id, meta.eom_token_id) if i is not None}
    ids.update(i for i, (text, kind) in enumerate(zip(meta.tokens, meta.token_type))
               if kind == CONTROL and text in EOG_TEXTS)
    if not ids:
        raise ConfigError("the GGUF names no end-of-sequence token")
    return sorted(ids)
