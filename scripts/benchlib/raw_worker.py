"""Raw llama-cpp-python in its own process: the high-level streaming API, timed from the inside.

Protocol (JSON lines): started with the model and engine settings on the command line, it prints
{"event": "ready", ...load timings...}, then answers one {"messages", "max_tokens", "prompt_id"} line on
stdin with one result line on stdout, until stdin closes. llama.cpp's own logging goes to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import time
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--context", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--no-mmap", action="store_true")
    return parser.parse_args()


def answer(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    max_tokens = int(request["max_tokens"])
    sent = time.perf_counter()
    first = last = 0.0
    finish, pieces = "", []
    for chunk in llm.create_chat_completion(messages=request["messages"], max_tokens=max_tokens,
                                            temperature=0.0, stream=True):
        choice = chunk["choices"][0]
        text = choice["delta"].get("content")
        if text:
            last = time.perf_counter()
            first = first or last
            pieces.append(text)
        finish = choice.get("finish_reason") or finish
    # The streaming API reports no usage. A "length" finish means exactly max_tokens were generated;
    # otherwise count by re-tokenising the text, which matches greedy output except in rare merges.
    if finish == "length":
        tokens, source = max_tokens, "max_tokens"
    else:
        tokens = len(llm.tokenize("".join(pieces).encode(), add_bos=False, special=True))
        source = "retokenised"
    return {"prompt_id": request.get("prompt_id", ""), "ttft_s": first - sent if first else None,
            "first_to_last_s": last - first, "completion_tokens": tokens, "token_source": source,
            "finish_reason": finish or "unknown"}


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    from llama_cpp import Llama  # noqa: PLC0415  (import time is reported separately)
    from llama_cpp import llama_cpp as bindings  # noqa: PLC0415

    # A portable build (run-time CPU dispatch) has its CPU kernels in variant modules that every user of
    # the bindings must load once, as edged's engine does; the high-level API does not do it by itself.
    lib_dir = str(bindings._base_path).encode()
    bindings._lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    bindings._lib.ggml_backend_load_all_from_path(lib_dir)
    imported = time.perf_counter()
    llm = Llama(model_path=args.model, n_threads=args.threads, n_threads_batch=args.threads,
                n_ctx=args.context, n_batch=args.batch, n_ubatch=args.batch, use_mmap=not args.no_mmap,
                n_gpu_layers=0, verbose=False)
    loaded = time.perf_counter()
    print(json.dumps({"event": "ready", "import_s": imported - started, "load_s": loaded - imported}), flush=True)
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(llm, json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
