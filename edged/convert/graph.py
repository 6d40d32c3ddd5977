"""Build the ONNX decoder graph of a Llama-family model: RMSNorm, RoPE, GQA with a KV cache, SiLU MLP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edged.convert.blocks import BLOCK, QuantMatrix, stack_rows

OPSET = 17  # onnxruntime 1.14+; everything but MatMulNBits is a standard op
MS_DOMAIN = "com.microsoft"
# MatMulNBits' accuracy_level: 0 multiplies 4-bit weights in float32, so the graph computes exactly the
# GGUF's weights (4, int8 activations as llama.cpp uses, was no faster end to end on SmolLM2). 8-bit
# weights always use 4: onnxruntime has no fast float path for them (110 ms instead of 0.7 ms for the
# 576 x 49152 output layer).
ACCURACY_LEVEL = 0


@dataclass(frozen=True)
class DecoderShape:
    num_layers: int
    hidden: int
    intermediate: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    rope_theta: float
    rms_eps: float


class Weights(Protocol):
    """Weights fetched one at a time (so the converter can report progress), by GGUF-style name.

    Layer i has attn_norm, ffn_norm (vectors) and attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up,
    ffn_down (matrices, Q/K rows in Hugging Face rotate-half order); layer -1 has norm, embed and output,
    where output is the very same object as embed when the embeddings are tied (stored once).
    """

    def matrix(self, layer: int, name: str) -> QuantMatrix: ...

    def vector(self, layer: int, name: str) -> np.ndarray: ...


class _Graph:
    def __init__(self, accuracy_level: int) -> None:
        from onnx import helper

        self.accuracy_level = accuracy_level
        self.helper = helper
        self.nodes: list[Any] = []  # onnx NodeProto / TensorProto
        self.initializers: list[Any] = []
        self._embedding: tuple[QuantMatrix, tuple[str, str, str | None, str | None]] | None = None
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, inputs: list[str], hint: str = "", domain: str = "", output: str = "",
           **attrs: Any) -> str:
        """Add a node; `output` names its (graph) output, else a unique name is made from `hint`."""
        name = output or self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [name], name=self.name(op_type), domain=domain,
                                                **attrs))
        return name

    def matmuls(self, x: str, weights: list[QuantMatrix], hints: list[str]) -> list[str]:
        """x times each weight; matrices sharing an input run as one MatMulNBits whose output is split
        (fewer, larger kernels: decoding one token is dominated by per-node overhead)."""
        stacked = stack_rows(weights) if len(weights) > 1 else None
        if stacked is None:
            return [self.matmul(x, w, h) for w, h in zip(weights, hints)]
        both = self.matmul(x, stacked, "+".join(hints))
        return self._split(both, [w.n for w in weights], hints)

    def _split(self, x: str, sizes: list[int], hints: list[str]) -> list[str]:
        names = [self.name(h) for h in hints]
        self.nodes.append(self.helper.make_node("Split", [x, self.ints(*sizes)], names, name=self.name("Split"),
                                                axis=-1))
        return names

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, np.int64), "shape")

    def _stored(self, weight: QuantMatrix, hint: str) -> tuple[str, str, str | None, str | None]:
        """Initializers of a matrix in MatMulNBits' flat layout; the embedding's are kept for a tied output."""
        if self._embedding is not None and self._embedding[0] is weight:
            return self._embedding[1]
        zp = None if weight.zero_points is None else self.const(weight.zero_points.reshape(-1), f"{hint}.zp")
        bias = None if weight.bias is None else self.const(weight.bias, f"{hint}.bias")  # [n, blocks]
        return (self.const(weight.packed, f"{hint}.q"), self.const(weight.scales.reshape(-1), f"{hint}.scales"),
                zp, bias)

    def matmul(self, x: str, weight: QuantMatrix, hint: str, output: str = "") -> str:
        """x @ weight.T through MatMulNBits (+ the block-bias term of GGUF Q4_1 weights)."""
        q, scales, zp, bias = self._stored(weight, hint)
        out = self.op("MatMulNBits", [x, q, scales] + ([zp] if zp else []), hint, MS_DOMAIN,
                      output="" if bias is not None else output, K=weight.k, N=weight.n, bits=weight.bits,
                      block_size=BLOCK, accuracy_level=4 if weight.bits == 8 else self.accuracy_level)
        if bias is None:
            return out
        sums = self.op("ReduceSum", [self.op("Reshape", [x, self.ints(0, 0, -1, BLOCK)]), self.ints(-1)],
                       keepdims=0)  # [b, s, blocks]
        return self.op("Add", [out, self.op("MatMul", [sums, self.op("Transpose", [bias], perm=[1, 0])])],
                       output=output)

    def embed(self, ids: str, table: QuantMatrix) -> str:
        """Gather rows of the quantized table and dequantize only those (no float table is ever stored)."""
        q, scales, zp, bias = self._stored(table, "embed")
        self._embedding = (table, (q, scales, zp, bias))
        values = self._unpack(self.op("Gather", [q, ids]), table.bits)  # [b, s, blocks, 32]
        per_row = self.ints(table.n, -1)
        scale = self.op("Gather", [self.op("Reshape", [scales, per_row]), ids])  # [b, s, blocks]
        if zp is not None:  # the converter rounds embeddings to 8 bits symmetric, or copies GGUF Q4/Q8 blocks
            raise ValueError("embedding tables with explicit zero points are not supported")
        zero = self.const(np.array(1 << (table.bits - 1), np.float32))
        scaled = self.op("Mul", [self.op("Sub", [values, zero]), self.op("Unsqueeze", [scale, self.ints(-1)])])
        if bias is not None:
            scaled = self.op("Add", [scaled, self.op("Unsqueeze", [self.op("Gather", [bias, ids]), self.ints(-1)])])
        flat = self.op("Reshape", [scaled, self.ints(0, 0, -1)])
        return self.op("Slice", [flat, self.ints(0), self.ints(table.k), self.ints(2)], "embedded")

    def _unpack(self, packed: str, bits: int) -> str:
        """uint8 [..., groups, bytes] → float [..., groups, values]: 4-bit bytes hold two values, low first."""
        if bits == 8:
            return self.op("Cast", [packed], to=1)
        wide = self.op("Cast", [packed], to=6)  # int32: Mod and Div on uint8 are not in every runtime
        sixteen = self.const(np.array(16, np.int32))
        low = self.op("Unsqueeze", [self.op("Mod", [wide, sixteen]), self.ints(-1)])
        high = self.op("Unsqueeze", [self.op("Div", [wide, sixteen]), self.ints(-1)])
        pairs = self.op("Concat", [low, high], axis=-1)
        return self.op("Cast", [self.op("Reshape", [pairs, self.ints(0, 0, 0, -1)])], to=1)

    def rms_norm(self, x: str, weight: np.ndarray, eps: float, hint: str) -> str:
        # The Pow/ReduceMean/Add/Sqrt/Div pattern is the one onnxruntime fuses into SimplifiedLayerNormalization.
        square = self.op("Pow", [x, self.const(np.array(2.0, np.float32))])
        mean = self.op("ReduceMean", [square], axes=[-1], keepdims=1)
        root = self.op("Sqrt", [self.op("Add", [mean, self.const(np.array(eps, np.float32))])])
        return self.op("Mul", [self.op("Div", [x, root]), self.const(weight.astype(np.float32), f"{hint}.weight")],
                       hint)


def _rope(g: _Graph, x: str, cos: str, sin: str, half: int) -> str:
    """Rotate-half RoPE on [b, heads, s, head_dim] (weights are in Hugging Face order, not GGUF's)."""
    x1 = g.op("Slice", [x, g.ints(0), g.ints(half), g.ints(3)])
    x2 = g.op("Slice", [x, g.ints(half), g.ints(2 * half), g.ints(3)])
    first = g.op("Sub", [g.op("Mul", [x1, cos]), g.op("Mul", [x2, sin])])
    second = g.op("Add", [g.op("Mul", [x2, cos]), g.op("Mul", [x1, sin])])
    return g.op("Concat", [first, second], axis=3)


def _attention(g: _Graph, x: str, layer: int, weights: Weights, shape: DecoderShape, cos: str, sin: str,
               mask: str, past: tuple[str, str]) -> tuple[str, str, str]:
    heads, kv_heads, dim = shape.num_heads, shape.num_kv_heads, shape.head_dim
    p = f"layers.{layer}.attn"

    names = ("attn_q", "attn_k", "attn_v")
    projected = g.matmuls(x, [weights.matrix(layer, n) for n in names], [f"{p}.{n[5:]}" for n in names])

    def heads_first(out: str, count: int) -> str:
        return g.op("Transpose", [g.op("Reshape", [out, g.ints(0, 0, count, dim)])], perm=[0, 2, 1, 3])

    q = _rope(g, heads_first(projected[0], heads), cos, sin, dim // 2)
    k = _rope(g, heads_first(projected[1], kv_heads), cos, sin, dim // 2)
    v = heads_first(projected[2], kv_heads)
    present_k = g.op("Concat", [past[0], k], axis=2, output=f"present.{layer}.key")
    present_v = g.op("Concat", [past[1], v], axis=2, output=f"present.{layer}.value")
    # Grouped-query attention without copying K/V per query head: the query heads of one KV head form a
    # group axis, and K/V broadcast over it ([b, kv, group, s, d] @ [b, kv, 1, d, t]).
    q = g.op("Mul", [q, g.const(np.array(1.0 / np.sqrt(dim), np.float32))])
    q = g.op("Reshape", [q, g.ints(0, kv_heads, heads // kv_heads, -1, dim)])
    keys = g.op("Transpose", [g.op("Unsqueeze", [present_k, g.ints(2)])], perm=[0, 1, 2, 4, 3])
    scores = g.op("Add", [g.op("MatMul", [q, keys]), mask])
    probs = g.op("Softmax", [scores], axis=-1)
    ctx = g.op("MatMul", [probs, g.op("Unsqueeze", [present_v, g.ints(2)])])
    ctx = g.op("Transpose", [g.op("Reshape", [ctx, g.ints(0, heads, -1, dim)])], perm=[0, 2, 1, 3])
    ctx = g.op("Reshape", [ctx, g.ints(0, 0, heads * dim)])
    return g.matmul(ctx, weights.matrix(layer, "attn_output"), f"{p}.o"), present_k, present_v


def _mlp(g: _Graph, x: str, layer: int, weights: Weights) -> str:
    p = f"layers.{layer}.mlp"
    gate, up = g.matmuls(x, [weights.matrix(layer, "ffn_gate"), weights.matrix(layer, "ffn_up")],
                         [f"{p}.gate", f"{p}.up"])
    act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), up])  # SiLU(gate) * up
    return g.matmul(act, weights.matrix(layer, "ffn_down"), f"{p}.down")


def build_decoder(shape: DecoderShape, weights: Weights, name: str, all_logits: bool = False,
                  accuracy_level: int = ACCURACY_LEVEL) -> object:
    """The decoder as an onnx.ModelProto with the Optimum / onnxruntime-genai input and output names.

    Logits are computed for the last position only unless `all_logits`: a prompt of n tokens would
    otherwise need n x vocab floats that nobody reads.
    """
    from onnx import TensorProto, helper

    g = _Graph(accuracy_level)
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    kv_dims: list[str | int] = ["batch", shape.num_kv_heads, "past_sequence", shape.head_dim]
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch", "sequence"]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch", "total_sequence"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch", "sequence"])]
    outputs = [helper.make_tensor_value_info("logits", f32,
                                             ["batch", "sequence" if all_logits else 1, shape.vocab_size])]
    # Additive mask [b, 1, 1, s, t]: key j is visible to query i when j <= past + i and attention_mask[j] = 1.
    total = g.op("Gather", [g.op("Shape", ["attention_mask"]), g.ints(1)])
    seq = g.op("Gather", [g.op("Shape", ["input_ids"]), g.ints(1)])
    key_pos = g.op("Range", [g.ints(0), total, g.ints(1)])
    query_pos = g.op("Unsqueeze", [g.op("Range", [g.op("Sub", [total, seq]), total, g.ints(1)]), g.ints(1)])
    causal = g.op("LessOrEqual", [key_pos, query_pos])
    padding = g.op("Unsqueeze", [g.op("Cast", ["attention_mask"], to=TensorProto.BOOL), g.ints(1, 2, 3)])
    mask = g.op("Where", [g.op("And", [causal, padding]), g.const(np.array(0.0, np.float32)),
                          g.const(np.array(np.finfo(np.float32).min, np.float32))], "mask")
    # RoPE angles from position_ids: [b, 1, s, head_dim/2] cosines and sines shared by every layer.
    inv_freq = shape.rope_theta ** (-np.arange(0, shape.head_dim, 2, dtype=np.float64) / shape.head_dim)
    angles = g.op("Mul", [g.op("Unsqueeze", [g.op("Cast", ["position_ids"], to=f32), g.ints(2)]),
                          g.const(inv_freq.astype(np.float32), "rope.inv_freq")])
    cos = g.op("Unsqueeze", [g.op("Cos", [angles]), g.ints(1)], "rope.cos")
    sin = g.op("Unsqueeze", [g.op("Sin", [angles]), g.ints(1)], "rope.sin")

    hidden = g.embed("input_ids", weights.matrix(-1, "embed"))
    for layer in range(shape.num_layers):
        past = (f"past_key_values.{layer}.key", f"past_key_values.{layer}.value")
        inputs += [helper.make_tensor_value_info(n, f32, kv_dims) for n in past]
        normed = g.rms_norm(hidden, weights.vector(layer, "attn_norm"), shape.rms_eps, f"layers.{layer}.attn_norm")
        attn, present_k, present_v = _attention(g, normed, layer, weights, shape, cos, sin, mask, past)
        hidden = g.op("Add", [hidden, attn])
        normed = g.rms_norm(hidden, weights.vector(layer, "ffn_norm"), shape.rms_eps, f"layers.{layer}.ffn_norm")
        hidden = g.op("Add", [hidden, _mlp(g, normed, layer, weights)])
        for present in (present_k, present_v):
            outputs.append(helper.make_tensor_value_info(
                present, f32, ["batch", shape.num_kv_heads, "total_sequence", shape.head_dim]))
    hidden = g.rms_norm(hidden, weights.vector(-1, "norm"), shape.rms_eps, "norm")
    if not all_logits:
        hidden = g.op("Slice", [hidden, g.ints(-1), g.ints(np.iinfo(np.int64).max), g.ints(1)], "last")
    g.matmul(hidden, weights.matrix(-1, "output"), "lm_head", output="logits")
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                             producer_name="edged convert")
