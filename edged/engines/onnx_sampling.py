"""Next-token choice from logits with numpy: greedy, or top-p then temperature, seeded like llama.cpp's chain."""

from __future__ import annotations

import numpy as np

from edged.engines.base import SamplingParams


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    probabilities: np.ndarray = shifted / shifted.sum()
    return probabilities


class Sampler:
    """One generation's sampler; the seed fixes the whole sequence of draws (None: fresh OS entropy)."""

    def __init__(self, params: SamplingParams) -> None:
        self._temperature = params.temperature
        self._top_p = params.top_p
        self._rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray) -> int:
        if self._temperature <= 0.0:
            return int(np.argmax(logits))
        values = logits.astype(np.float64)
        candidates = np.arange(values.size)
        if self._top_p < 1.0:
            # As llama.cpp's chain (top_p, then temp): the nucleus is cut on the untempered distribution,
            # keeping the most likely tokens until their mass reaches top_p.
            order = np.argsort(-values, kind="stable")
            mass = np.cumsum(_softmax(values[order]))
            keep = int(np.searchsorted(mass, self._top_p)) + 1
            candidates = order[:keep]
            values = values[candidates]
        probs = _softmax(values / self._temperature)
        return int(candidates[self._rng.choice(candidates.size, p=probs)])
