"""MatMulNBits blocks made from GGUF blocks or by rounding, and the ONNX engine's numpy sampler."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

from edged.convert.blocks import BLOCK, from_q4_0, from_q4_1, from_q8_0, pack, quantize, stack_rows, unpack
from edged.engines.base import SamplingParams
from edged.engines.onnx_sampling import Sampler

Q = gguf.GGMLQuantizationType
CONVERTERS = {Q.Q4_0: from_q4_0, Q.Q4_1: from_q4_1, Q.Q8_0: from_q8_0}


@pytest.mark.parametrize("kind", list(CONVERTERS))
def test_gguf_blocks_are_copied_exactly(kind):
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((24, 96)) * rng.uniform(0.01, 3, (24, 1))).astype(np.float32)
    weight[3] = 0.5  # a constant row: Q4_1 blocks with d = 0
    raw = gguf.quants.quantize(weight, kind)
    matrix = CONVERTERS[kind](raw, 96)
    assert matrix.bits == (8 if kind == Q.Q8_0 else 4) and matrix.blocks == 96 // BLOCK
    np.testing.assert_array_equal(matrix.dequantize(), gguf.quants.dequantize(raw, kind))


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("k", [64, 40])
def test_rounding_error_is_at_most_half_a_step(bits, k):
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((16, k)).astype(np.float32)
    weight[:, :5] = 0
    matrix = quantize(weight, bits)
    restored = matrix.dequantize()
    assert restored.shape == weight.shape
    step = np.repeat(matrix.scales, BLOCK, axis=1)[:, :k]
    assert np.all(np.abs(restored - weight) <= step / 2 + 1e-6)
    assert np.all(restored[:, :5] == 0)  # zero stays exactly zero


def test_take_rows_reorders_whole_rows():
    weight = np.random.default_rng(3).standard_normal((8, 64)).astype(np.float32)
    matrix = from_q4_1(gguf.quants.quantize(weight, Q.Q4_1), 64)
    order = np.array([3, 1, 2, 0, 7, 6, 5, 4])
    np.testing.assert_array_equal(matrix.take_rows(order).dequantize(), matrix.dequantize()[order])


def test_stacked_rows_keep_every_part_exact():
    rng = np.random.default_rng(4)
    parts = [from_q4_0(gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32), Q.Q4_0), 64),
             quantize(rng.standard_normal((6, 64)).astype(np.float32), 4),  # explicit zero points
             from_q4_1(gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q4_1), 64)]
    stacked = stack_rows(parts)
    assert stacked is not None and stacked.n == 12
    np.testing.assert_array_equal(stacked.dequantize(), np.concatenate([p.dequantize() for p in parts]))
    assert stack_rows([parts[0], quantize(rng.standard_normal((2, 64)).astype(np.float32), 8)]) is None


def test_four_bit_packing_round_trips_low_nibble_first():
    values = np.array([[1, 2, 15, 0, 7]], np.uint8)
    packed = pack(values, 4)
    assert packed.tolist() == [[0x21, 0x0F, 0x07]]
    assert unpack(packed, 4)[:, :5].tolist() == values.tolist()


def draws(params: SamplingParams, logits: np.ndarray, count: int) -> np.ndarray:
    sampler = Sampler(params)
    return np.array([sampler(logits) for _ in range(count)])


def test_greedy_and_a_tiny_nucleus_pick_the_best_token():
    logits = np.array([0.1, 2.0, 1.9, -1.0], np.float32)
    assert set(draws(SamplingParams(), logits, 5)) == {1}
    assert set(draws(SamplingParams(temperature=2.0, top_p=1e-6, seed=1), logits, 50)) == {1}


def test_temperature_sampling_follows_the_softmax_and_the_seed():
    logits = np.array([0.0, np.log(3.0)], np.float32)  # probabilities 1/4 and 3/4 at temperature 1
    picks = draws(SamplingParams(temperature=1.0, seed=7), logits, 4000)
    assert 0.72 < picks.mean() < 0.78
    assert np.array_equal(picks[:50], draws(SamplingParams(temperature=1.0, seed=7), logits, 50))
    hotter = draws(SamplingParams(temperature=4.0, seed=7), logits, 4000)
    assert 0.52 < hotter.mean() < 0.62  # 3^(1/4) : 1 is about 57% : 43%


def test_top_p_keeps_the_smallest_set_reaching_the_mass():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    picks = draws(SamplingParams(temperature=1.0, top_p=0.7, seed=3), logits, 2000)
    assert set(picks) == {0, 1}  # 0.5 < 0.7 <= 0.5 + 0.3
    assert 0.58 < (picks == 0).mean() < 0.67  # renormalised: 0.5 / 0.8 = 62.5%
