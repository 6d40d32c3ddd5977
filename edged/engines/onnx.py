"""The ONNX engine: a decoder directory (docs/models.md) on onnxruntime, with a numpy KV cache and sampler."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from edged.engines.base import Engine, EngineSettings, GenerationResult, ModelInfo, SamplingParams, TokenSink
from edged.engines.chat_template import prepare_template, render_chat
from edged.engines.onnx_config import CONFIG_FILE, MAX_CONFIG_BYTES, OnnxModelFile, read_json_file
from edged.engines.onnx_runner import DecoderSession
from edged.engines.onnx_sampling import Sampler
from edged.engines.onnx_tokenizer import ByteBpeTokenizer
from edged.engines.textstream import TextStream
from edged.structured.constraint import TokenMask, bytes_tokenizer
from edged.structured.grammar import GrammarCache
from edged.errors import BadRequest, EngineError
from edged.messages import ChatMessage

logger = structlog.get_logger(__name__)


class OnnxEngine(Engine):
    def __init__(self, model_dir: Path) -> None:
        self._dir = model_dir
        self._config: OnnxModelFile | None = None
        self._tokenizer: ByteBpeTokenizer | None = None
        self._session: DecoderSession | None = None
        self._n_ctx = 0
        self._n_batch = 0
        self._eog: frozenset[int] = frozenset()
        self._grammars: GrammarCache | None = None  # built at the first constrained request

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self, settings: EngineSettings) -> ModelInfo:
        self.unload()
        if not self._dir.is_dir():
            raise EngineError(f"{self._dir} is not a directory")
        config = read_json_file(self._dir / CONFIG_FILE, OnnxModelFile, MAX_CONFIG_BYTES)
        tokenizer = ByteBpeTokenizer.from_file(self._dir / config.tokenizer_file)
        if tokenizer.size != config.vocab_size:
            raise EngineError(f"{config.tokenizer_file} has {tokenizer.size} tokens but {CONFIG_FILE} says the "
                              f"model has {config.vocab_size}: the tokenizer belongs to another model")
        special = [i for i in (config.bos_token_id, config.eos_token_id, *config.eog_token_ids) if i is not None]
        if any(i >= tokenizer.size for i in special):
            raise EngineError(f"{CONFIG_FILE} names special token ids beyond the vocabulary ({tokenizer.size})")
        model_path = self._dir / config.model_file
        if not model_path.is_file():
            raise EngineError(f"{model_path} is missing")
        threads = max(1, min(settings.threads, os.cpu_count() or 1))
        session = DecoderSession(model_path, config, threads)
        # One token through the graph now: a model whose logits do not match the tokenizer, or that fails
        # to run at all, is refused at load rather than on the first request.
        logits = session.run([config.eos_token_id])
        if logits.shape != (config.vocab_size,):
            raise EngineError(f"{model_path} produces {logits.shape[-1]} logits but the tokenizer has "
                              f"{config.vocab_size} tokens: the model and tokenizer do not belong together")
        session.reset()
        prepare_template(config.chat_template)
        self._config, self._tokenizer, self._session = config, tokenizer, session
        self._n_ctx = min(settings.context, config.context_length)
        self._n_batch = max(1, settings.batch)
        self._eog = frozenset(config.eog_token_ids)
        self._grammars = None
        size = sum(p.stat().st_size for p in self._dir.iterdir() if p.is_file())
        info = ModelInfo(name=config.name, path=str(self._dir), format="onnx", size_bytes=size,
                         parameters=config.parameters, context=self._n_ctx, context_train=config.context_length,
                         threads=threads)
        logger.info("model loaded", model=info.name, path=info.path, context=info.context, threads=threads,
                    format="onnx")
        return info

    def unload(self) -> None:
        self._session = None
        self._tokenizer = None
        self._grammars = None

    def _mask(self, grammar: str | None) -> TokenMask | None:
        if grammar is None:
            return None
        tokenizer, config = self._tokenizer, self._config
        assert tokenizer is not None and config is not None
        if self._grammars is None:
            special = tokenizer.special_ids
            pieces = [tokenizer.texts[i].encode() if i in special else tokenizer.piece(i)
                      for i in range(tokenizer.size)]
            self._grammars = GrammarCache(bytes_tokenizer(pieces, config.eos_token_id, config.bos_token_id,
                                                          sorted(special), tokenizer.encode))
        return TokenMask(self._grammars, grammar, tokenizer.size)

    def tokenize(self, text: str) -> list[int]:
        if self._tokenizer is None or self._config is None:
            raise EngineError("no model loaded")
        ids = self._tokenizer.encode(text)
        if self._config.add_bos and self._config.bos_token_id is not None:
            ids.insert(0, self._config.bos_token_id)
        return ids

    def _prompt_text(self, messages: list[ChatMessage] | None, prompt: str | None,
                     tools: tuple[Any, ...] = ()) -> str:
        assert self._config is not None and self._tokenizer is not None
        if messages is None:
            return prompt or ""
        texts = self._tokenizer.texts
        bos = texts[self._config.bos_token_id] if self._config.bos_token_id is not None else ""
        return render_chat(self._config.chat_template, messages, bos, texts[self._config.eos_token_id], tools)

    def _prefill(self, session: DecoderSession, tokens: list[int]) -> tuple[int, np.ndarray]:
        """Run the prompt, reusing the longest prefix already in the KV cache; returns (reused, logits)."""
        reuse = 0
        for cached, new in zip(session.cached, tokens):
            if cached != new:
                break
            reuse += 1
        reuse = min(reuse, len(tokens) - 1)  # the last prompt token must run to give the next logits
        session.truncate(reuse)
        logits = np.empty(0, np.float32)
        for start in range(reuse, len(tokens), self._n_batch):
            logits = session.run(tokens[start:start + self._n_batch])
        return reuse, logits

    def generate(self, messages: list[ChatMessage] | None, prompt: str | None,
                 params: SamplingParams, sink: TokenSink) -> GenerationResult:
        session, tokenizer = self._session, self._tokenizer
        if session is None or tokenizer is None:
            raise EngineError("no model loaded")
        started = time.perf_counter()
        tokens = self.tokenize(self._prompt_text(messages, prompt, params.tools))
        if not tokens:
            raise BadRequest("the prompt is empty")
        room = self._n_ctx - len(tokens)
        if room < 1:
            raise BadRequest(f"prompt is {len(tokens)} tokens; the context holds {self._n_ctx}")
        max_tokens = min(params.max_tokens, room)
        mask = self._mask(params.grammar)
        reused, logits = self._prefill(session, tokens)
        sample = Sampler(params)
        stream = TextStream(params.stop)
        finish, generated, first_at = "length", 0, 0.0
        while generated < max_tokens:
            if mask is not None:
                logits = np.array(logits, dtype=np.float32)  # a writable copy to mask
                mask.apply(logits)
            token = sample(logits)
            if not first_at:
                first_at = time.perf_counter()
            if token in self._eog:
                finish = "stop"
                break
            if mask is not None:
                mask.accept(token)
            generated += 1
            ended_by = stream.deliver(tokenizer.piece(token), sink)
            if ended_by:
                finish = ended_by
                break
            if mask is not None and mask.finished:
                finish = "stop"
                break
            if generated < max_tokens:  # the last token's keys and values would never be read
                logits = session.run([token])
        stream.close(finish, sink)
        ended = time.perf_counter()
        first_at = first_at or ended
        return GenerationResult(finish_reason=finish, prompt_tokens=len(tokens), completion_tokens=generated,
                                cached_prompt_tokens=reused, prompt_s=first_at - started, decode_s=ended - first_at)
