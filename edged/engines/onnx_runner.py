"""One onnxruntime decoder session with its KV cache: checked at load, run a chunk of tokens at a time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edged.engines.onnx_config import OnnxModelFile
from edged.errors import EngineError

KV_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def ort_errors() -> tuple[type[BaseException], ...]:
    """onnxruntime's exception classes (they derive from Exception directly) plus numpy/Python ones."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    names = ("Fail", "InvalidArgument", "NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph",
             "RuntimeException", "NotImplemented", "EPFail")
    return tuple(getattr(state, n) for n in names if hasattr(state, n)) + (RuntimeError, ValueError, OSError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__


class DecoderSession:
    """The graph plus the keys and values of the tokens seen so far (`cached`), batch size 1."""

    def __init__(self, model_path: Path, config: OnnxModelFile, threads: int) -> None:
        ort = _ort()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # The intra-op workers spin between the operators of one step (parking them costs per token),
        # but stop the moment a Run returns: an idle daemon must not burn a core's worth of spin tail.
        options.add_session_config_entry("session.force_spinning_stop", "1")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")  # one inter-op thread: never used
        options.log_severity_level = 4  # failures are raised (and logged by edged) with their message
        try:
            self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except ort_errors() as exc:
            raise EngineError(f"onnxruntime could not load {model_path}: {_first_line(exc)}") from None
        self._errors = ort_errors()
        self.config = config
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        layers = range(config.num_layers)
        self._past = [f"past_key_values.{i}.{kind}" for i in layers for kind in ("key", "value")]
        self._present = [f"present.{i}.{kind}" for i in layers for kind in ("key", "value")]
        missing = [n for n in ("input_ids", "attention_mask", *self._past) if n not in inputs]
        missing += [n for n in ("logits", *self._present) if n not in outputs]
        if missing:
            shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
            raise EngineError(f"{model_path} is not a decoder with the layout edged_model.json describes "
                              f"({config.num_layers} layers): missing {shown}")
        extra = sorted(set(inputs) - {"input_ids", "attention_mask", "position_ids", *self._past})
        if extra:
            raise EngineError(f"{model_path} needs inputs edged does not provide: {', '.join(extra[:6])}")
        self._positions = "position_ids" in inputs
        kv_type = inputs[self._past[0]].type
        if kv_type not in KV_DTYPES:
            raise EngineError(f"{model_path}: KV cache type {kv_type} is not supported (float or float16)")
        self._kv_dtype = KV_DTYPES[kv_type]
        self.cached: list[int] = []
        self._kv: list[np.ndarray] = []
        self.reset()

    def reset(self) -> None:
        empty = np.zeros((1, self.config.num_kv_heads, 0, self.config.head_dim), self._kv_dtype)
        self._kv = [empty] * len(self._past)
        self.cached = []

    def truncate(self, keep: int) -> None:
        """Forget every cached token after the first `keep` (a prefix shared with the next prompt stays)."""
        if keep < len(self.cached):
            self._kv = [np.ascontiguousarray(kv[:, :, :keep]) for kv in self._kv]
            self.cached = self.cached[:keep]

    def run(self, tokens: list[int]) -> np.ndarray:
        """Feed tokens after the cached ones; returns the logits of the last one (float32 [vocab])."""
        start, count = len(self.cached), len(tokens)
        feed: dict[str, np.ndarray] = {
            "input_ids": np.asarray([tokens], np.int64),
            "attention_mask": np.ones((1, start + count), np.int64),
            **dict(zip(self._past, self._kv)),
        }
        if self._positions:
            feed["position_ids"] = np.arange(start, start + count, dtype=np.int64)[None]
        try:
            logits, *present = self._session.run(["logits", *self._present], feed)
        except self._errors as exc:
            self.reset()
            raise EngineError(f"onnxruntime failed: {_first_line(exc)}") from None
        expected = (1, self.config.num_kv_heads, start + count, self.config.head_dim)
        if present[0].shape != expected:
            self.reset()
            raise EngineError(f"the model's KV cache has shape {present[0].shape}, edged_model.json says "
                              f"{expected} (num_kv_heads, head_dim)")
        self._kv = present
        self.cached.extend(tokens)
        return np.asarray(logits[0, -1], np.float32)
