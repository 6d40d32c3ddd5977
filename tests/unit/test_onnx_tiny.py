"""The GGUF → ONNX converter and the ONNX engine on tiny random Llama models written with the gguf package."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from edged.convert.gguf_source import GgufSource
from edged.convert.onnx_export import convert_gguf
from edged.engines.base import EngineSettings, SamplingParams
from edged.engines.onnx import OnnxEngine
from edged.engines.onnx_config import OnnxModelFile
from edged.engines.onnx_runner import DecoderSession
from edged.engines.onnx_tokenizer import bytes_to_unicode
from edged.errors import BadRequest, ConfigError, EngineError
from edged.messages import ChatMessage

pytestmark = pytest.mark.slow  # builds tiny models and runs them through onnxruntime

LAYERS, HIDDEN, HEADS, KV_HEADS, FFN = 2, 64, 4, 2, 128
HEAD_DIM = HIDDEN // HEADS
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]
VOCAB = SPECIALS + [bytes_to_unicode()[b] for b in range(256)] + ["Ġt", "he", "Ġthe", "in"]
Q = gguf.GGMLQuantizationType
EXACT = {"attn_q": Q.Q4_1, "attn_k": Q.Q4_0, "attn_v": Q.Q4_1, "attn_output": Q.Q4_0,
         "ffn_gate": Q.Q4_1, "ffn_up": Q.Q4_0, "ffn_down": Q.Q4_1}
ROUNDED = {"attn_q": Q.F32, "attn_k": Q.F16, "attn_v": Q.Q8_0, "attn_output": Q.F32,
           "ffn_gate": Q.F16, "ffn_up": Q.F32, "ffn_down": Q.Q8_0}
SHAPES = {"attn_q": (HIDDEN, HIDDEN), "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN), "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
          "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
TOKENS = [1, 60, 77, 3, 200, 45, 45, 90, 259, 120, 7, 33]


def write_tiny_gguf(path: Path, matrix_types: dict[str, object], tied: bool, embed_type: object,
                    arch: str = "llama", extra_tensor: str = "") -> None:
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), arch)
    for setter, value in (("name", "tiny"), ("block_count", LAYERS), ("context_length", 256),
                          ("embedding_length", HIDDEN), ("feed_forward_length", FFN), ("head_count", HEADS),
                          ("head_count_kv", KV_HEADS), ("layer_norm_rms_eps", 1e-5), ("rope_freq_base", 1e4),
                          ("tokenizer_model", "gpt2"), ("tokenizer_pre", "smollm"), ("token_list", VOCAB),
                          ("token_types", [3] * len(SPECIALS) + [1] * (len(VOCAB) - len(SPECIALS))),
                          ("token_merges", MERGES), ("bos_token_id", 1), ("eos_token_id", 2)):
        getattr(w, f"add_{setter}")(value)

    def add(name: str, shape: tuple[int, ...], kind: object, scale: float = 0.25) -> None:
        x = (rng.standard_normal(shape) * scale).astype(np.float32)
        if name in ("token_embd.weight", "output.weight"):
            x[:len(SPECIALS)] = 0  # special tokens get logit 0, below some random token: no early stop
        if kind == Q.F32:
            w.add_tensor(name, x)
        elif kind == Q.F16:
            w.add_tensor(name, x.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(x, kind), raw_dtype=kind)

    add("token_embd.weight", (len(VOCAB), HIDDEN), embed_type, 1.0)
    for layer in range(LAYERS):
        w.add_tensor(f"blk.{layer}.attn_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        w.add_tensor(f"blk.{layer}.ffn_norm.weight", (1 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))
        for name, kind in matrix_types.items():
            add(f"blk.{layer}.{name}.weight", SHAPES[name], kind)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    if not tied:
        add("output.weight", (len(VOCAB), HIDDEN), Q.Q4_1)
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros(HIDDEN, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference_logits(path: Path, tokens: list[int], rounded_bits: int | None = None) -> np.ndarray:
    """The model in float64 numpy, written as llama.cpp computes it: GGUF row order, adjacent-pair RoPE.

    With `rounded_bits`, each matrix is what the converter's block rounding made of it (as dequantized
    by edged.convert.blocks), to check the graph computes the rounded weights and nothing else.
    """
    reader = gguf.GGUFReader(path)
    weights = {t.name: gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float64)
               .reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    if rounded_bits is not None:
        source = GgufSource(path)
        for name, value in list(weights.items()):
            if value.ndim == 2:
                bits = 8 if name == "token_embd.weight" else rounded_bits  # the converter's embedding cap
                weights[name] = source.matrix(name, bits).dequantize().astype(np.float64)

    def rms(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w

    def rope(t: np.ndarray) -> np.ndarray:  # [heads, s, d]; rotates (x[2i], x[2i+1]) pairs
        angles = np.arange(len(tokens))[:, None] * 10000.0 ** (-np.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        even, odd = t[..., 0::2], t[..., 1::2]
        out = np.empty_like(t)
        out[..., 0::2] = even * np.cos(angles) - odd * np.sin(angles)
        out[..., 1::2] = even * np.sin(angles) + odd * np.cos(angles)
        return out

    x, s = weights["token_embd.weight"][tokens], len(tokens)
    for i in range(LAYERS):
        def proj(name: str, inp: np.ndarray) -> np.ndarray:
            return inp @ weights[f"blk.{i}.{name}.weight"].T  # noqa: B023

        n = rms(x, weights[f"blk.{i}.attn_norm.weight"])
        q = rope(proj("attn_q", n).reshape(s, HEADS, HEAD_DIM).transpose(1, 0, 2))
        k = np.repeat(rope(proj("attn_k", n).reshape(s, KV_HEADS, HEAD_DIM).transpose(1, 0, 2)), HEADS // KV_HEADS, 0)
        v = np.repeat(proj("attn_v", n).reshape(s, KV_HEADS, HEAD_DIM).transpose(1, 0, 2), HEADS // KV_HEADS, 0)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(HEAD_DIM) + np.triu(np.full((s, s), -np.inf), 1)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + proj("attn_output", (probs @ v).transpose(1, 0, 2).reshape(s, HIDDEN))
        n = rms(x, weights[f"blk.{i}.ffn_norm.weight"])
        gate = proj("ffn_gate", n)
        x = x + proj("ffn_down", gate / (1 + np.exp(-gate)) * proj("ffn_up", n))
    out = weights.get("output.weight", weights["token_embd.weight"])
    return rms(x, weights["output_norm.weight"]) @ out.T


@pytest.fixture(scope="module", params=["untied-q8-embed", "tied-q4-embed"])
def tiny(request, tmp_path_factory) -> tuple[Path, Path]:
    """(gguf file, converted dir with logits at every position) for both embedding layouts."""
    base = tmp_path_factory.mktemp(request.param)
    tied = request.param.startswith("tied")
    write_tiny_gguf(base / "tiny.gguf", EXACT, tied=tied, embed_type=Q.Q4_1 if tied else Q.Q8_0)
    convert_gguf(base / "tiny.gguf", base / "all", all_logits=True)
    return base / "tiny.gguf", base / "all"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """A converted tiny model in the default layout (last-position logits), for the engine tests."""
    base = tmp_path_factory.mktemp("tiny-engine")
    write_tiny_gguf(base / "tiny.gguf", EXACT, tied=True, embed_type=Q.Q8_0)
    convert_gguf(base / "tiny.gguf", base / "model")
    return base / "model"


def all_logits(model_dir: Path, tokens: list[int]) -> np.ndarray:
    """Logits at every position from one uncached pass (the all_logits layout)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    empty = np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32)
    feed = {"input_ids": np.array([tokens], np.int64), "attention_mask": np.ones((1, len(tokens)), np.int64),
            "position_ids": np.arange(len(tokens), dtype=np.int64)[None],
            **{f"past_key_values.{i}.{kind}": empty for i in range(LAYERS) for kind in ("key", "value")}}
    return sess.run(["logits"], feed)[0][0]


def test_graph_matches_float_reference(tiny):
    """Q4_0/Q4_1 blocks are carried exactly, so the graph must agree with the float64 model to rounding."""
    path, model_dir = tiny
    got, want = all_logits(model_dir, TOKENS), reference_logits(path, TOKENS)
    assert got.shape == want.shape == (len(TOKENS), len(VOCAB))
    np.testing.assert_allclose(got, want, atol=2e-3 * np.abs(want).max(), rtol=0)


def test_kv_cache_gives_the_logits_of_a_full_recompute(tiny):
    _, model_dir = tiny
    full = all_logits(model_dir, TOKENS)
    config = OnnxModelFile.model_validate_json((model_dir / "edged_model.json").read_bytes())
    cached = DecoderSession(model_dir / "model.onnx", config, threads=1)
    steps = [cached.run(TOKENS[:3])] + [cached.run(TOKENS[i:i + 2]) for i in range(3, 7, 2)]
    steps += [cached.run([t]) for t in TOKENS[7:]]
    positions = [2, 4, 6, *range(7, len(TOKENS))]
    np.testing.assert_allclose(np.stack(steps), full[positions], atol=1e-4, rtol=1e-4)
    cached.truncate(5)  # forgetting a suffix and re-running it must give the same logits again
    np.testing.assert_allclose(cached.run(TOKENS[5:8]), full[7], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("quant,tolerance", [("int4", 2e-3), ("int8", 0.1)])
def test_rounded_weights_are_what_the_graph_computes(tmp_path, quant, tolerance):
    """F32, F16 and (for int4) Q8_0 weights are rounded per block, and the graph computes those weights.

    4-bit products run in float32, so int4 matches to rounding. 8-bit ones multiply int8-quantized
    activations (onnxruntime's only fast 8-bit path), which moves this random model's logits by some 4%:
    the bound is loose, but a packing or zero-point mistake moves them by 100% or more.
    """
    write_tiny_gguf(tmp_path / "f.gguf", ROUNDED, tied=False, embed_type=Q.F16)
    result = convert_gguf(tmp_path / "f.gguf", tmp_path / "m", quant, all_logits=True)
    assert result.tensors[f"F32 rounded to {quant}"] == 3 * LAYERS
    assert result.tensors["F16 rounded to int8"] == 1 + (2 * LAYERS if quant == "int8" else 0)  # + embedding
    assert result.tensors.get("Q8_0 rounded to int4", 0) == (2 * LAYERS if quant == "int4" else 0)
    want = reference_logits(tmp_path / "f.gguf", TOKENS, rounded_bits=int(quant[3:]))
    error = np.abs(all_logits(tmp_path / "m", TOKENS) - want).max() / np.abs(want).max()
    print(f"{quant}: largest logit error {error:.5f} of the largest logit")
    assert error < tolerance


def collect(engine: OnnxEngine, params: SamplingParams, messages: list[ChatMessage] | None = None):
    pieces: list[str] = []
    result = engine.generate(messages, None if messages else "the", params, lambda t: pieces.append(t) or True)
    return result, "".join(pieces)


def test_engine_generates_and_reuses_the_prompt_prefix(tiny_dir):
    engine = OnnxEngine(tiny_dir)
    info = engine.load(EngineSettings(threads=1, context=128, batch=4))
    assert (info.format, info.context, info.context_train) == ("onnx", 128, 256)
    messages = [ChatMessage(role="user", content="the thin thing")]
    (first, text), (second, again) = [collect(engine, SamplingParams(max_tokens=12), messages) for _ in range(2)]
    assert first.completion_tokens == 12 and first.finish_reason == "length" and text and again == text
    assert first.cached_prompt_tokens == 0 and second.cached_prompt_tokens == first.prompt_tokens - 1
    hot = SamplingParams(max_tokens=16, temperature=1.5, seed=5)
    assert collect(engine, hot)[1] == collect(engine, hot)[1]  # the seed fixes every draw
    nucleus_of_one = SamplingParams(max_tokens=16, temperature=1.5, top_p=1e-9, seed=5)
    assert collect(engine, nucleus_of_one)[1] == collect(engine, SamplingParams(max_tokens=16))[1]
    with pytest.raises(BadRequest, match="context holds 128"):
        engine.generate(None, "the " * 200, SamplingParams(), lambda t: True)
    engine.unload()
    assert not engine.loaded


def test_cancel_stops_at_the_first_refused_piece(tiny_dir):
    engine = OnnxEngine(tiny_dir)
    engine.load(EngineSettings(threads=1))
    calls: list[str] = []
    result = engine.generate(None, "the", SamplingParams(max_tokens=50), lambda t: calls.append(t) is not None)
    assert result.finish_reason == "cancelled" and len(calls) == 1
    assert result.completion_tokens <= 4  # a piece appears once a UTF-8 character is complete


def test_corrupt_model_file_fails_at_load(tiny_dir, tmp_path):
    model_dir = shutil.copytree(tiny_dir, tmp_path / "m")
    (model_dir / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(EngineError, match=r"onnxruntime could not load .*model\.onnx"):
        OnnxEngine(model_dir).load(EngineSettings())


def test_missing_input_fails_at_load(tiny_dir, tmp_path):
    import onnx

    model_dir = shutil.copytree(tiny_dir, tmp_path / "m")
    model = onnx.load(str(model_dir / "model.onnx"), load_external_data=False)
    for value in model.graph.input:
        if value.name == "past_key_values.1.value":
            value.name = "past_values_1"
    for node in model.graph.node:
        node.input[:] = ["past_values_1" if n == "past_key_values.1.value" else n for n in node.input]
    onnx.save(model, str(model_dir / "model.onnx"))
    with pytest.raises(EngineError, match=r"missing past_key_values\.1\.value"):
        OnnxEngine(model_dir).load(EngineSettings())


def test_tokenizer_of_another_model_fails_at_load(tiny_dir, tmp_path):
    model_dir = shutil.copytree(tiny_dir, tmp_path / "m")
    spec = json.loads((model_dir / "tokenizer.json").read_text())
    spec["model"]["vocab"]["Ġthere"] = len(VOCAB)
    (model_dir / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(EngineError, match=f"has {len(VOCAB) + 1} tokens but .* has {len(VOCAB)}"):
        OnnxEngine(model_dir).load(EngineSettings())
    config = json.loads((model_dir / "edged_model.json").read_text())
    config["vocab_size"] = len(VOCAB) + 1  # the config agrees with the tokenizer, the graph does not
    (model_dir / "edged_model.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match=f"produces {len(VOCAB)} logits"):
        OnnxEngine(model_dir).load(EngineSettings())


def test_bad_config_names_the_field(tiny_dir, tmp_path):
    model_dir = shutil.copytree(tiny_dir, tmp_path / "m")
    config = json.loads((model_dir / "edged_model.json").read_text())
    config["num_layers"] = "two"
    (model_dir / "edged_model.json").write_text(json.dumps(config))
    with pytest.raises(EngineError, match="num_layers"):
        OnnxEngine(model_dir).load(EngineSettings())
    (model_dir / "edged_model.json").unlink()
    with pytest.raises(EngineError, match=r"edged_model\.json is missing"):
        OnnxEngine(model_dir).load(EngineSettings())


def test_convert_command(tmp_path, capsys):
    from edged.commands import convert

    write_tiny_gguf(tmp_path / "t.gguf", EXACT, tied=True, embed_type=Q.Q8_0)
    parser = argparse.ArgumentParser()
    convert.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", "onnx", str(tmp_path / "t.gguf"), str(tmp_path / "out"), "--quant", "int8"])
    assert args.func(args) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "out")
    assert "[  0%] embedding: token_embd.weight (Q8_0)" in err and "converted t.gguf" in err
    assert json.loads((tmp_path / "out" / "edged_model.json").read_text())["quantization"] == "int8"
    with pytest.raises(ConfigError, match="not an empty directory"):
        args.func(args)


@pytest.mark.parametrize("arch,extra,message", [("gpt2", "", "architecture 'gpt2' is not supported"),
                                                ("llama", "blk.0.attn_q.bias", "blk.0.attn_q.bias are not supported")])
def test_unsupported_models_are_refused(tmp_path, arch, extra, message):
    write_tiny_gguf(tmp_path / "g.gguf", EXACT, tied=True, embed_type=Q.Q8_0, arch=arch, extra_tensor=extra)
    with pytest.raises(ConfigError, match=message):
        convert_gguf(tmp_path / "g.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_idle_engine_does_not_spin(tiny_dir):
    """onnxruntime's workers stop spinning when a step returns (force_spinning_stop), so idle costs no CPU."""
    engine = OnnxEngine(tiny_dir)
    engine.load(EngineSettings(threads=2, context=128, batch=4))
    session = engine._session
    assert session is not None
    options = session._session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    collect(engine, SamplingParams(max_tokens=8))

    def cpu_s() -> float:
        times = os.times()
        return times.user + times.system  # every thread of this process, the onnxruntime workers included

    before = cpu_s()
    time.sleep(3)
    # A worker left spinning would use about 3 CPU seconds here; the bound only allows for the test's noise.
    assert cpu_s() - before < 0.3
    engine.unload()
