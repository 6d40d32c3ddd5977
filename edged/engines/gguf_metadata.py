"""The few GGUF metadata values edged reads from a loaded model: its name, chat template and attribution."""

from __future__ import annotations

import ctypes
from typing import Any

# The GGUF keys that say who made the model and which version it is (Wyoming's describe shows them).
ATTRIBUTION_KEYS = frozenset({"general.author", "general.organization", "general.url", "general.repo_url",
                              "general.version"})
BUFFER = 1 << 16


def read_metadata(lib: Any, model: Any) -> dict[str, str]:
    """The wanted string values of `model` (a llama_model pointer) through llama.cpp's `lib`."""
    out: dict[str, str] = {}
    buf = ctypes.create_string_buffer(BUFFER)
    for i in range(lib.llama_model_meta_count(model)):
        if lib.llama_model_meta_key_by_index(model, i, buf, len(buf)) < 0:
            continue
        key = buf.value.decode("utf-8", "replace")
        if key not in ATTRIBUTION_KEYS and not key.startswith(("general.name", "tokenizer.chat_template")):
            continue
        size = lib.llama_model_meta_val_str_by_index(model, i, buf, len(buf))
        if size >= len(buf):
            big = ctypes.create_string_buffer(size + 1)
            lib.llama_model_meta_val_str_by_index(model, i, big, len(big))
            out[key] = big.value.decode("utf-8", "replace")
        elif size >= 0:
            out[key] = buf.value.decode("utf-8", "replace")
    return out
