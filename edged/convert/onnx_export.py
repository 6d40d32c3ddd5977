"""GGUF → ONNX model directory: model.onnx (+ .data), tokenizer.json and edged_model.json."""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.convert.blocks import QuantMatrix
from edged.convert.gguf_source import GgufSource
from edged.convert.graph import DecoderShape, build_decoder
from edged.convert.progress import Progress
from edged.convert.tokenizer_export import eog_ids, tokenizer_json
from edged.engines.onnx_config import CONFIG_FILE, OnnxModelFile
from edged.errors import ConfigError

QUANT_BITS = {"int4": 4, "int8": 8}
# The token embedding doubles as the output layer of tied models, where 4-bit rounding costs the most.
EMBED_MAX_BITS = 8
MATRICES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
DATA_FILE = "model.onnx.data"


@dataclass(frozen=True)
class ConvertResult:
    out_dir: Path
    config: OnnxModelFile
    tensors: dict[str, int]  # "Q4_1 copied" / "F32 rounded to int4" → count
    seconds: float


class GgufWeights:
    """The graph builder's weight source over a GGUF: one tensor per call, counted for progress."""

    def __init__(self, source: GgufSource, shape: DecoderShape, bits: int, progress: Progress) -> None:
        self._source, self._shape, self._bits, self._progress = source, shape, bits, progress
        self._embed: QuantMatrix | None = None
        self.tally: Counter[str] = Counter()

    def _load(self, gguf_name: str, label: str, max_bits: int) -> QuantMatrix:
        kind = self._source.type_name(gguf_name)
        self._progress.step(f"{label}: {gguf_name} ({kind})")
        matrix = self._source.matrix(gguf_name, max_bits)
        copied = matrix.bits == {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}.get(kind)
        self.tally[f"{kind} copied" if copied else f"{kind} rounded to int{matrix.bits}"] += 1
        return matrix

    def matrix(self, layer: int, name: str) -> QuantMatrix:
        if layer < 0:
            if name == "output" and self._source.has("output.weight"):
                return self._load("output.weight", "output", self._bits)
            if self._embed is None:  # "embed" comes first; a tied "output" is the same object
                self._embed = self._load("token_embd.weight", "embedding", EMBED_MAX_BITS)
            return self._embed
        shape = self._shape
        matrix = self._load(f"blk.{layer}.{name}.weight", f"layer {layer + 1}/{shape.num_layers}", self._bits)
        heads = {"attn_q": shape.num_heads, "attn_k": shape.num_kv_heads}.get(name)
        if heads is not None:
            # GGUF interleaves each head's rows for llama.cpp's RoPE; undo it for rotate-half RoPE.
            order = np.arange(matrix.n).reshape(heads, shape.head_dim // 2, 2).transpose(0, 2, 1).reshape(-1)
            matrix = matrix.take_rows(order)
        return matrix

    def vector(self, layer: int, name: str) -> np.ndarray:
        gguf_name = "output_norm.weight" if layer < 0 else f"blk.{layer}.{name}.weight"
        return self._source.floats(gguf_name)


def decoder_shape(source: GgufSource) -> DecoderShape:
    meta = source.meta
    known = {"token_embd.weight", "output_norm.weight", "output.weight"} | {
        f"blk.{i}.{name}.weight" for i in range(meta.block_count) for name in (*MATRICES, "attn_norm", "ffn_norm")}
    unknown = sorted(set(source.tensor_names) - known)
    if unknown:
        # A tensor the graph would not use (a bias, a gate, a norm) means a feature it does not implement.
        shown = ", ".join(unknown[:4]) + (f" and {len(unknown) - 4} more" if len(unknown) > 4 else "")
        raise ConfigError(f"{source.path}: tensors {shown} are not supported by the converter")
    if meta.embedding_length % meta.head_count or meta.head_count % meta.head_count_kv:
        raise ConfigError(f"{source.path}: {meta.head_count} heads do not divide the model evenly")
    head_dim = meta.key_length or meta.embedding_length // meta.head_count
    if (meta.rope_dimension_count or head_dim) != head_dim or head_dim % 2:
        raise ConfigError(f"{source.path}: partial rotary embeddings are not supported")
    vocab_size = source.shape("token_embd.weight")[0]
    return DecoderShape(num_layers=meta.block_count, hidden=meta.embedding_length,
                        intermediate=meta.feed_forward_length, num_heads=meta.head_count,
                        num_kv_heads=meta.head_count_kv, head_dim=head_dim, vocab_size=vocab_size,
                        rope_theta=meta.rope_freq_base, rms_eps=meta.rms_eps)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def convert_gguf(gguf_path: Path, out_dir: Path, quant: str = "int4", progress: Progress | None = None,
                 all_logits: bool = False) -> ConvertResult:
    """Convert; edged_model.json is written last, so a directory without it is an unfinished conversion."""
    import onnx

    started = time.monotonic()
    if quant not in QUANT_BITS:
        raise ConfigError(f"unknown quantization {quant!r} (choose from {', '.join(QUANT_BITS)})")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} exists and is not an empty directory")
    source = GgufSource(gguf_path)
    shape = decoder_shape(source)
    if len(source.tokenizer.tokens) != shape.vocab_size:
        raise ConfigError(f"{gguf_path}: {len(source.tokenizer.tokens)} tokens but {shape.vocab_size} embedding rows")
    tokenizer = tokenizer_json(source.tokenizer)
    eog = eog_ids(source.tokenizer)
    progress = progress or Progress(1)
    progress.total = shape.num_layers * len(MATRICES) + 1 + int(source.has("output.weight"))
    weights = GgufWeights(source, shape, QUANT_BITS[quant], progress)
    model = build_decoder(shape, weights, source.meta.name, all_logits=all_logits)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress.note(f"writing {out_dir / 'model.onnx'} and {DATA_FILE}")
    onnx.save_model(model, str(out_dir / "model.onnx"), save_as_external_data=True,  # type: ignore[arg-type]
                    all_tensors_to_one_file=True, location=DATA_FILE, size_threshold=1024)
    # onnx creates the data file owner-only; give it model.onnx's mode so a daemon user can read both.
    shutil.copymode(out_dir / "model.onnx", out_dir / DATA_FILE)
    _write_json(out_dir / "tokenizer.json", tokenizer)
    meta, tok = source.meta, source.tokenizer
    config = OnnxModelFile(
        format="edged-onnx-decoder", version=1, name=meta.name, architecture=source.architecture,
        chat_template=tok.chat_template, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else eog[0], eog_token_ids=eog,
        add_bos=tok.add_bos_token, vocab_size=shape.vocab_size, num_layers=shape.num_layers,
        num_kv_heads=shape.num_kv_heads, head_dim=shape.head_dim, context_length=meta.context_length,
        parameters=source.parameter_count(), quantization=quant, source=gguf_path.name, model_file="model.onnx",
        tokenizer_file="tokenizer.json")
    (out_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=1) + "\n", encoding="utf-8")
    return ConvertResult(out_dir, config, dict(weights.tally), time.monotonic() - started)
