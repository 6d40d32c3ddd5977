"""The files of an ONNX model directory, validated: edged_model.json and the tokenizer.json subset edged reads."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from edged.validation import StrictModel, describe_validation_error
from edged.atomic import read_bounded
from edged.errors import EngineError

CONFIG_FILE = "edged_model.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_TOKENIZER_BYTES = 64 << 20


class OnnxModelFile(StrictModel):
    """edged_model.json: what the engine needs beside the graph and the tokenizer (docs/models.md)."""

    format: Literal["edged-onnx-decoder"]
    version: Literal[1]
    name: str = Field(min_length=1, max_length=256)
    architecture: str = Field(min_length=1, max_length=64)
    model_file: str = Field("model.onnx", pattern=r"^[^/\\]+$")
    tokenizer_file: str = Field("tokenizer.json", pattern=r"^[^/\\]+$")
    chat_template: str | None = Field(None, max_length=1 << 16)
    bos_token_id: int | None = Field(None, ge=0)
    eos_token_id: int = Field(ge=0)
    eog_token_ids: list[int] = Field(min_length=1, max_length=64)
    add_bos: bool = False
    vocab_size: int = Field(ge=1)
    num_layers: int = Field(ge=1, le=1024)
    num_kv_heads: int = Field(ge=1)
    head_dim: int = Field(ge=1)
    context_length: int = Field(ge=1)
    parameters: int = Field(0, ge=0)
    quantization: str = Field("", max_length=64)
    source: str = Field("", max_length=1024)


class AddedToken(StrictModel):
    id: int = Field(ge=0)
    content: str = Field(min_length=1)
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False
    special: bool = True


class ByteLevelPre(StrictModel):
    type: Literal["ByteLevel"]
    add_prefix_space: Literal[False] = False
    trim_offsets: bool = True
    use_regex: Literal[True] = True


class DigitsPre(StrictModel):
    type: Literal["Digits"]
    individual_digits: Literal[True]


class SequencePre(StrictModel):
    type: Literal["Sequence"]
    pretokenizers: list[Annotated[DigitsPre | ByteLevelPre, Field(discriminator="type")]] = Field(
        min_length=1, max_length=2)


class BpeModel(StrictModel):
    type: Literal["BPE"]
    dropout: None = None
    unk_token: str | None = None
    continuing_subword_prefix: None = None
    end_of_word_suffix: None = None
    fuse_unk: bool = False
    byte_fallback: Literal[False] = False
    ignore_merges: bool = False
    vocab: dict[str, int]
    merges: list[str] | list[list[str]]


class TokenizerFile(StrictModel):
    """A Hugging Face tokenizer.json of the byte-level BPE kind (GPT-2, StarCoder, SmolLM2)."""

    version: str = "1.0"
    truncation: None = None
    padding: None = None
    added_tokens: list[AddedToken] = Field(default_factory=list)
    normalizer: None = None
    pre_tokenizer: Annotated[ByteLevelPre | SequencePre, Field(discriminator="type")]
    post_processor: dict[str, Any] | None = None
    decoder: dict[str, Any] | None = None
    model: BpeModel


T = TypeVar("T", bound=BaseModel)


def read_json_file(path: Path, model: type[T], max_bytes: int) -> T:
    """Read and validate one JSON file of the model directory; every failure is an EngineError naming it."""
    try:
        data = read_bounded(path, max_bytes)
    except FileNotFoundError:
        raise EngineError(f"{path} is missing; is {path.parent} an edged ONNX model directory?") from None
    except OSError as exc:
        raise EngineError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise EngineError(f"{path} is larger than {max_bytes} bytes")
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        errors = describe_validation_error(exc, str(path)).split("\n")
        shown = "; ".join(errors[:6]) + ("; ..." if len(errors) > 6 else "")
        raise EngineError(shown) from None
