"""Read a Llama-family GGUF through the gguf package: validated hyper-parameters, tokenizer data, tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edged.validation import StrictModel, describe_validation_error
from edged.convert.blocks import QuantMatrix, from_q4_0, from_q4_1, from_q8_0, quantize
from edged.errors import ConfigError

SUPPORTED_ARCHITECTURES = ("llama",)
# GGUF blocks that MatMulNBits holds bit for bit, with the bit width they keep.
EXACT_BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}
# Metadata whose presence means a feature the graph builder does not implement.
UNSUPPORTED_KEYS = ("rope.scaling.type", "attention.sliding_window", "expert_count", "attn_logit_softcapping")


class LlamaMeta(StrictModel):
    """The GGUF keys the converter uses, named without the architecture prefix."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    block_count: int = Field(ge=1)
    context_length: int = Field(ge=1)
    embedding_length: int = Field(ge=1)
    feed_forward_length: int = Field(ge=1)
    head_count: int = Field(ge=1)
    head_count_kv: int = Field(ge=1)
    rope_freq_base: float = Field(10000.0, gt=0)
    rope_dimension_count: int | None = None
    rms_eps: float = Field(gt=0)
    key_length: int | None = None


class TokenizerMeta(StrictModel):
    model: str
    pre: str = "default"
    tokens: list[str] = Field(min_length=1)
    token_type: list[int]
    # absent for SentencePiece vocabularies, which tokenizer_json refuses by name
    merges: list[str] = Field(default_factory=list)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    eot_token_id: int | None = None
    eom_token_id: int | None = None
    add_bos_token: bool = False
    chat_template: str | None = None


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise ConfigError("converting needs the gguf package: pip install 'edged[convert]'") from None
    return gguf


class GgufSource:
    """One GGUF file, memory-mapped; tensors are read one at a time."""

    def __init__(self, path: Path) -> None:
        gguf = _gguf()
        self.path = path
        try:
            self._reader = gguf.GGUFReader(path)
        except (OSError, ValueError, IndexError, KeyError) as exc:
            raise ConfigError(f"{path}: not a readable GGUF file: {exc}") from None
        self._tensors = {t.name: t for t in self._reader.tensors}
        arch = self._value("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(f"{path}: architecture {arch!r} is not supported (supported: "
                              f"{', '.join(SUPPORTED_ARCHITECTURES)})")
        self.architecture = str(arch)
        for key in UNSUPPORTED_KEYS:
            if f"{arch}.{key}" in self._reader.fields:
                raise ConfigError(f"{path}: {arch}.{key} is set; the converter does not implement it")
        if "rope_freqs.weight" in self._tensors:
            raise ConfigError(f"{path}: per-dimension RoPE frequencies (rope_freqs.weight) are not supported")
        self.meta = self._validate(LlamaMeta, {
            "name": self._value("general.name", path.stem),
            **{key: self._value(f"{arch}.{gguf_key}") for key, gguf_key in (
                ("block_count", "block_count"), ("context_length", "context_length"),
                ("embedding_length", "embedding_length"), ("feed_forward_length", "feed_forward_length"),
                ("head_count", "attention.head_count"), ("head_count_kv", "attention.head_count_kv"),
                ("rope_freq_base", "rope.freq_base"), ("rope_dimension_count", "rope.dimension_count"),
                ("rms_eps", "attention.layer_norm_rms_epsilon"), ("key_length", "attention.key_length"))
                if self._value(f"{arch}.{gguf_key}") is not None}})
        self.tokenizer = self._validate(TokenizerMeta, {
            key: value for key in TokenizerMeta.model_fields
            if (value := self._value(f"tokenizer.{key}" if key == "chat_template" else f"tokenizer.ggml.{key}"))
            is not None})

    def _value(self, key: str, default: Any = None) -> Any:
        field = self._reader.fields.get(key)
        return default if field is None else field.contents()

    def _validate(self, model: type[BaseModel], data: dict[str, Any]) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, f"{self.path} metadata", separator="; ")) from None

    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def has(self, name: str) -> bool:
        return name in self._tensors

    def type_name(self, name: str) -> str:
        return str(self._tensor(name).tensor_type.name)

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape in numpy order ([out, in] for a weight; GGUF lists it the other way round)."""
        return tuple(int(d) for d in reversed(self._tensor(name).shape))

    def parameter_count(self) -> int:
        return sum(int(np.prod(t.shape)) for t in self._reader.tensors)

    def _tensor(self, name: str) -> Any:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise ConfigError(f"{self.path}: tensor {name} is missing")
        return tensor

    def floats(self, name: str) -> np.ndarray:
        """A tensor dequantized to float32, in numpy's row-major order ([out, in] for a weight)."""
        gguf = _gguf()
        tensor = self._tensor(name)
        try:
            data = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError:
            raise ConfigError(f"{self.path}: {name} has type {tensor.tensor_type.name}, which cannot be "
                              "dequantized") from None
        return np.ascontiguousarray(data, dtype=np.float32).reshape(self.shape(name))

    def matrix(self, name: str, max_bits: int) -> QuantMatrix:
        """A weight in MatMulNBits blocks: GGUF blocks that fit in `max_bits` are copied, others rounded."""
        tensor = self._tensor(name)
        kind = tensor.tensor_type.name
        k = int(tensor.shape[0])
        if EXACT_BITS.get(kind, 99) <= max_bits:
            raw = np.asarray(tensor.data)
            return {"Q4_0": from_q4_0, "Q4_1": from_q4_1, "Q8_0": from_q8_0}[kind](raw, k)
        return quantize(self.floats(name), max_bits)
