"""The GGUF engine on llama.cpp's low-level API: C sampler chain, one batch per step, a reused prefix."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path
from typing import Any

import structlog

from edged.engines import llama_backend
from edged.engines.base import Engine, EngineSettings, GenerationResult, ModelInfo, SamplingParams, TokenSink
from edged.engines.chat_template import prepare_template, render_chat
from edged.engines.gguf_metadata import read_metadata
from edged.engines.prefix_store import MIN_PREFIX_TOKENS, PrefixEntry, PrefixStore
from edged.engines.textstream import TextStream
from edged.structured.constraint import TokenMask, llama_tokenizer
from edged.structured.grammar import GrammarCache
from edged.errors import BadRequest, EngineError
from edged.memory import drop_mapped_pages
from edged.messages import ChatMessage

logger = structlog.get_logger(__name__)

GGUF_MAGIC = b"GGUF"
KV_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}  # ggml_type values
PIECE_BUFFER = 256
PROBE_TEXT = "\u2063edged-preamble-probe\u2063"


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaEngine(Engine):
    def __init__(self, path: Path) -> None:
        self._path = path
        self._lib: Any = None
        self._model: Any = None
        self._weights: tuple[bool, bool] | None = None  # (mmap, mlock) the weights were loaded with
        self._ctx: Any = None
        self._vocab: Any = None
        self._memory: Any = None
        self._template: str | None = None
        self._bos = self._eos = ""
        self._add_bos = True
        self._n_ctx = 0
        self._n_batch = 0
        # Tokens whose keys and values are in the KV cache now, in order: the reusable prefix.
        self._cached: list[int] = []
        self._piece = ctypes.create_string_buffer(PIECE_BUFFER)
        self._one: Any = None
        self._prefixes: PrefixStore | None = None
        self._grammars: GrammarCache | None = None  # built at the first constrained request
        self._n_vocab = 0

    def use_prefix_store(self, store: PrefixStore | None) -> None:
        self._prefixes = store

    @property
    def loaded(self) -> bool:
        return self._ctx is not None

    def _check_file(self) -> int:
        try:
            with self._path.open("rb") as handle:
                magic = handle.read(4)
            size = self._path.stat().st_size
        except OSError as exc:
            raise EngineError(f"cannot read model {self._path}: {exc.strerror}") from None
        if magic != GGUF_MAGIC:
            raise EngineError(f"{self._path} is not a GGUF file (bad magic {magic!r})")
        return size

    def load(self, settings: EngineSettings) -> ModelInfo:
        size = self._check_file()
        kept = self._model is not None and self._ctx is None and self._weights == (settings.mmap, settings.mlock)
        if kept:  # after an idle release: the weights are still mapped, only the context is new
            lib, model = self._lib, self._model
        else:
            self.unload()
            lib = self._lib = llama_backend.bindings()
            lib.llama_backend_init()
            mparams = lib.llama_model_default_params()
            mparams.use_mmap = settings.mmap
            mparams.use_mlock = settings.mlock
            mparams.n_gpu_layers = 0
            model = lib.llama_model_load_from_file(str(self._path).encode(), mparams)
            if not model:
                raise EngineError(f"llama.cpp could not load {self._path}: corrupt or unsupported GGUF")
            self._model, self._weights = model, (settings.mmap, settings.mlock)
        threads = max(1, min(settings.threads, os.cpu_count() or 1))
        cparams = lib.llama_context_default_params()
        cparams.n_ctx = settings.context
        cparams.n_batch = cparams.n_ubatch = settings.batch
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.type_k = cparams.type_v = KV_TYPES[settings.kv_cache_type]
        cparams.no_perf = True
        ctx = lib.llama_init_from_model(model, cparams)
        if not ctx:
            self.unload()
            raise EngineError(f"llama.cpp could not create a context of {settings.context} tokens")
        self._ctx = ctx
        self._vocab = lib.llama_model_get_vocab(model)
        self._memory = lib.llama_get_memory(ctx)
        self._n_ctx, self._n_batch = lib.llama_n_ctx(ctx), settings.batch
        self._one = (lib.llama_token * 1)()
        meta = read_metadata(lib, model)
        self._template = meta.get("tokenizer.chat_template")
        prepare_template(self._template)
        self._bos = self._token_text(lib.llama_vocab_bos(self._vocab))
        self._eos = self._token_text(lib.llama_vocab_eos(self._vocab))
        self._add_bos = bool(lib.llama_vocab_get_add_bos(self._vocab))
        self._n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self._grammars = None
        self._cached = []
        if self._prefixes is not None:
            # The KV layout depends on the build and the cache type, not on threads, batch or the context
            # size (a sequence's state is its cells; measured: a prefix saved at n_ctx 4096 restores at
            # 2048 and 512 with the same greedy answer), so a profile switch that only resizes starts warm.
            backend = llama_backend.cpu_backend()
            self._prefixes.open(self._path, f"{backend.engine_version}:{backend.ggml_commit}:{settings.kv_cache_type}")
            recent = self._prefixes.most_recent(shorter_than=self._n_ctx)
            if recent is not None:
                self._restore(recent)
        info = ModelInfo(name=meta.get("general.name", self._path.stem), path=str(self._path), format="gguf",
                         size_bytes=size, parameters=int(lib.llama_model_n_params(model)),
                         context=self._n_ctx, context_train=int(lib.llama_model_n_ctx_train(model)),
                         threads=threads, author=meta.get("general.author") or meta.get("general.organization", ""),
                         url=meta.get("general.url") or meta.get("general.repo_url", ""),
                         version=meta.get("general.version", ""))
        logger.info("model loaded", model=info.name, path=info.path, context=info.context, threads=threads,
                    kv_cache_type=settings.kv_cache_type, cpu_variant=llama_backend.loaded_variant())
        return info

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, PIECE_BUFFER, 0, True)
        return self._piece.raw[:max(n, 0)].decode("utf-8", "replace")

    def release_idle(self) -> None:
        """Free the context and its KV cache and take the mmapped weights out of the RSS, keeping the
        mapping: the next request then needs a context and page faults served from the page cache,
        not a load. Weights that are anonymous memory (mmap off) or locked (mlock) are freed whole."""
        if self._weights != (True, False):
            self.unload()
            return
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        self._cached = []
        self._grammars = None
        dropped = drop_mapped_pages(self._path)  # out of the RSS now; faulted back from the page cache on use
        logger.info("idle model pages released", mapped_mib=round(dropped / 2**20, 1))

    def unload(self) -> None:
        if self._ctx is not None:
            self._lib.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            self._lib.llama_model_free(self._model)
            self._model = None
        self._cached = []
        self._grammars = None

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 8
        tokens = (self._lib.llama_token * room)()
        n = self._lib.llama_tokenize(self._vocab, data, len(data), tokens, room, self._add_bos, special)
        if n < 0:
            raise BadRequest("prompt could not be tokenised")
        return list(tokens[:n])

    def _sampler(self, params: SamplingParams) -> Any:
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        if params.temperature <= 0.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "big")
        if params.top_p < 1.0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(params.top_p, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(params.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain

    def _mask(self, grammar: str | None) -> TokenMask | None:
        if grammar is None:
            return None
        if self._grammars is None:
            self._grammars = GrammarCache(llama_tokenizer(self._lib, self._vocab))
        return TokenMask(self._grammars, grammar, self._n_vocab)

    def _logits(self) -> Any:
        import numpy as np

        return np.ctypeslib.as_array(self._lib.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))

    def _prefill(self, tokens: list[int], preamble: int = 0) -> int:
        """Decode the prompt, reusing the longest prefix already in the KV cache; returns reused count.

        ``preamble`` is the length of the prompt's system part: with a prefix store, a preamble seen
        for the first time is saved once decoded, and a stored one longer than the cached prefix is
        loaded instead of decoded.
        """
        lib = self._lib
        # The last prompt token must be decoded to get logits.
        reuse = min(common_prefix_length(self._cached, tokens), len(tokens) - 1)
        store = self._prefixes
        if store is not None and preamble > reuse:
            stored = store.longest_match(tokens, at_least=reuse)
            if stored is not None and self._restore(stored):
                reuse = len(stored.tokens)
        lib.llama_memory_seq_rm(self._memory, 0, reuse, -1)
        self._cached = self._cached[:reuse]
        save_at = preamble if store is not None and preamble - reuse >= MIN_PREFIX_TOKENS \
            and preamble < len(tokens) and not store.has(tuple(tokens[:preamble])) else 0
        if save_at and store is not None:
            self._decode_prompt(tokens[reuse:save_at])
            self._save_prefix(store, tuple(tokens[:save_at]))
            reuse_end = save_at
        else:
            reuse_end = reuse
        self._decode_prompt(tokens[reuse_end:])
        return reuse

    def _decode_prompt(self, tokens: list[int]) -> None:
        lib = self._lib
        for start in range(0, len(tokens), self._n_batch):
            part = tokens[start:start + self._n_batch]
            array = (lib.llama_token * len(part))(*part)
            if lib.llama_decode(self._ctx, lib.llama_batch_get_one(array, len(part))) != 0:
                self._reset_cache()
                raise EngineError("llama_decode failed while reading the prompt")
            self._cached.extend(part)

    def _save_prefix(self, store: PrefixStore, tokens: tuple[int, ...]) -> None:
        lib = self._lib
        size = lib.llama_state_seq_get_size(self._ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = lib.llama_state_seq_get_data(self._ctx, buffer, size, 0)
        if written:  # string_at copies once; slicing a ctypes array made a list of millions of ints first
            store.save(tokens, ctypes.string_at(buffer, written))

    def _restore(self, entry: PrefixEntry) -> bool:
        """Put a stored prefix into the KV cache (sequence 0); False when it could not be used."""
        assert self._prefixes is not None
        blob = self._prefixes.load_blob(entry)
        if blob is None:
            return False
        lib = self._lib
        lib.llama_memory_seq_rm(self._memory, 0, -1, -1)
        buffer = (ctypes.c_uint8 * len(blob)).from_buffer(blob)  # in place: no second copy of the state
        if not lib.llama_state_seq_set_data(self._ctx, buffer, len(blob), 0):
            self._reset_cache()
            self._prefixes.discard(entry, "llama.cpp refused the state")
            return False
        self._cached = list(entry.tokens)
        return True

    def _preamble_length(self, messages: list[ChatMessage] | None, tokens: list[int]) -> int:
        """Tokens of the prompt that belong to its leading system messages (0 without any, or no store)."""
        if self._prefixes is None or not messages or messages[0].role != "system":
            return 0
        system = []
        for message in messages:
            if message.role != "system":
                break
            system.append(message)
        # Render the system part with a user turn no real prompt has; the prompts agree up to where it starts.
        probe = self.tokenize(render_chat(self._template, [*system, ChatMessage(role="user", content=PROBE_TEXT)],
                                          self._bos, self._eos))
        return common_prefix_length(probe, tokens)

    def _reset_cache(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)
        self._cached = []

    def generate(self, messages: list[ChatMessage] | None, prompt: str | None,
                 params: SamplingParams, sink: TokenSink) -> GenerationResult:
        if self._ctx is None:
            raise EngineError("no model loaded")
        started = time.perf_counter()
        text = (render_chat(self._template, messages, self._bos, self._eos, params.tools) if messages is not None
                else prompt)
        tokens = self.tokenize(text or "")
        room = self._n_ctx - len(tokens)
        if room < 1:
            raise BadRequest(f"prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        max_tokens = min(params.max_tokens, room)
        mask = self._mask(params.grammar)
        reused = self._prefill(tokens, self._preamble_length(messages, tokens))
        lib, ctx, vocab, piece, one = self._lib, self._ctx, self._vocab, self._piece, self._one
        sampler = self._sampler(params)
        stream = TextStream(params.stop)
        finish, generated, first_at = "length", 0, 0.0
        try:
            while generated < max_tokens:
                if mask is not None:
                    mask.apply(self._logits())  # the sampler reads the logits from the context
                token = lib.llama_sampler_sample(sampler, ctx, -1)
                if not first_at:
                    first_at = time.perf_counter()
                if lib.llama_vocab_is_eog(vocab, token):
                    finish = "stop"
                    break
                if mask is not None:
                    mask.accept(token)
                generated += 1
                n = lib.llama_token_to_piece(vocab, token, piece, PIECE_BUFFER, 0, False)
                ended_by = stream.deliver(piece.raw[:n] if n > 0 else b"", sink)
                if ended_by:
                    finish = ended_by
                    break
                if mask is not None and mask.finished:
                    finish = "stop"
                    break
                one[0] = token
                if lib.llama_decode(ctx, lib.llama_batch_get_one(one, 1)) != 0:
                    self._reset_cache()
                    raise EngineError("llama_decode failed while generating")
                self._cached.append(token)
            stream.close(finish, sink)
        finally:
            lib.llama_sampler_free(sampler)
        ended = time.perf_counter()
        first_at = first_at or ended
        return GenerationResult(finish_reason=finish, prompt_tokens=len(tokens), completion_tokens=generated,
                                cached_prompt_tokens=reused, prompt_s=first_at - started, decode_s=ended - first_at)
