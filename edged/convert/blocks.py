"""Weights in onnxruntime's MatMulNBits layout: GGUF blocks carried over exactly, or float weights rounded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32  # GGUF's Q4_0/Q4_1/Q8_0 block length, and the MatMulNBits block_size edged uses


@dataclass(frozen=True)
class QuantMatrix:
    """A [n, k] weight (n outputs, k inputs) quantized in blocks of 32 along k.

    Dequantized value: scale * (q - zero_point) + bias. `zero_points` is None for the MatMulNBits default
    of 2^(bits-1), or uint8 [n, ceil(blocks*bits/8)] packed like the weights. `bias` (float32 [n, blocks]
    or None) carries GGUF Q4_1's block minimum, which is not a whole number of steps: the graph adds
    bias @ (block sums of the input) to the MatMulNBits result, which keeps Q4_1 exact and fast (float
    zero points, the other exact form, make onnxruntime's MatMulNBits some 20x slower).
    """

    packed: np.ndarray  # uint8 [n, blocks, 32*bits/8]
    scales: np.ndarray  # float32 [n, blocks]
    zero_points: np.ndarray | None
    bits: int
    k: int
    bias: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.packed.shape[0])

    @property
    def blocks(self) -> int:
        return int(self.packed.shape[1])

    def take_rows(self, order: np.ndarray) -> QuantMatrix:
        """The same matrix with its output rows reordered (rows are whole blocks, so nothing is re-rounded)."""
        zp = None if self.zero_points is None else self.zero_points[order]
        bias = None if self.bias is None else self.bias[order]
        return QuantMatrix(self.packed[order], self.scales[order], zp, self.bits, self.k, bias)

    def dequantize(self) -> np.ndarray:
        q = unpack(self.packed, self.bits).astype(np.float32)  # [n, blocks, 32]
        zp: np.ndarray | np.float32
        if self.zero_points is None:
            zp = np.float32(1 << (self.bits - 1))
        else:
            zp = unpack(self.zero_points, self.bits)[:, :self.blocks, None].astype(np.float32)
        values = (q - zp) * self.scales[..., None]
        if self.bias is not None:
            values += self.bias[..., None]
        matrix: np.ndarray = values.reshape(self.n, -1)[:, :self.k]
        return matrix


def stack_rows(parts: list[QuantMatrix]) -> QuantMatrix | None:
    """One matrix with the rows of all parts (e.g. Q, K and V: one MatMulNBits instead of three), or None
    when they differ in bit width or input size. Default zero points and missing biases are written out."""
    first = parts[0]
    if any(p.bits != first.bits or p.k != first.k or p.blocks != first.blocks for p in parts):
        return None
    zero_points = None
    if any(p.zero_points is not None for p in parts):
        default = pack(np.full((1, first.blocks), 1 << (first.bits - 1), np.uint8), first.bits)
        zero_points = np.concatenate([p.zero_points if p.zero_points is not None else np.repeat(default, p.n, 0)
                                      for p in parts])
    bias = None
    if any(p.bias is not None for p in parts):
        bias = np.concatenate([p.bias if p.bias is not None else np.zeros((p.n, p.blocks), np.float32)
                               for p in parts])
    return QuantMatrix(np.concatenate([p.packed for p in parts]), np.concatenate([p.scales for p in parts]),
                       zero_points, first.bits, first.k, bias)


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """uint8 values < 2^bits packed along the last axis: for 4 bits element 2i low nibble, 2i+1 high."""
    if bits == 8:
        return q.astype(np.uint8)
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), np.uint8)], axis=-1)
    packed: np.ndarray = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    return packed


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    if bits == 8:
        return packed
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def _blocks(raw: np.ndarray, block_bytes: int) -> np.ndarray:
    rows = raw.reshape(raw.shape[0], -1)
    return rows.reshape(rows.shape[0], rows.shape[1] // block_bytes, block_bytes)


def _ggml_nibbles(qs: np.ndarray) -> np.ndarray:
    # ggml stores element j in the low nibble of byte j and element j+16 in its high nibble.
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def from_q4_0(raw: np.ndarray, k: int) -> QuantMatrix:
    """GGUF Q4_0 (x = d * (q - 8)): the MatMulNBits default zero point is 8, so it maps exactly."""
    blocks = _blocks(raw, 18)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = _ggml_nibbles(blocks[..., 2:18])
    return QuantMatrix(pack(q, 4), d, None, 4, k)


def from_q4_1(raw: np.ndarray, k: int) -> QuantMatrix:
    """GGUF Q4_1 (x = d * q + m) as d * (q - 8) + (m + 8 d): default zero point plus a block bias; exact."""
    blocks = _blocks(raw, 20)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    q = _ggml_nibbles(blocks[..., 4:20])
    return QuantMatrix(pack(q, 4), d, None, 4, k, (m + 8 * d).astype(np.float32))


def from_q8_0(raw: np.ndarray, k: int) -> QuantMatrix:
    """GGUF Q8_0 (x = d * q, q signed) as d * (u - 128) with u = q + 128: the 8-bit default zero point."""
    blocks = _blocks(raw, 34)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    q = (blocks[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
    return QuantMatrix(q, d, None, 8, k)


def quantize(weight: np.ndarray, bits: int) -> QuantMatrix:
    """Round-to-nearest per block of 32: 4 bits asymmetric (uint8 zero points), 8 bits symmetric."""
    n, k = weight.shape
    padded = -(-k // BLOCK) * BLOCK
    w = np.zeros((n, padded), np.float32)
    w[:, :k] = weight
    w = w.reshape(n, padded // BLOCK, BLOCK)
    if bits == 8:
        scale = np.abs(w).max(axis=-1) / 127.0
        scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
        q = np.clip(np.rint(w / scale[..., None]), -127, 127).astype(np.int16) + 128
        return QuantMatrix(q.astype(np.uint8), scale, None, 8, k)
    if bits != 4:
        raise ValueError(f"unsupported bit width {bits}")
    # The range always includes 0 so that zero weights stay exactly zero.
    lo = np.minimum(w.min(axis=-1), 0)
    hi = np.maximum(w.max(axis=-1), 0)
    scale = ((hi - lo) / 15.0).astype(np.float32)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    zp = np.clip(np.rint(-lo / scale), 0, 15).astype(np.uint8)
    q = np.clip(np.rint(w / scale[..., None]) + zp[..., None], 0, 15).astype(np.uint8)
    return QuantMatrix(pack(q, 4), scale, pack(zp, 4), 4, k)
