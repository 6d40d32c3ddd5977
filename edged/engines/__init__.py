"""Model engines behind one interface; heavy runtimes are imported only when their format is used."""

from __future__ import annotations

from pathlib import Path

from edged.engines.base import Engine


def create_engine(model_path: Path) -> Engine:
    """Pick the engine by what the path is: a GGUF file or an ONNX model directory."""
    if model_path.is_dir():
        from edged.engines.onnx import OnnxEngine

        return OnnxEngine(model_path)
    from edged.engines.llama import LlamaEngine

    return LlamaEngine(model_path)
