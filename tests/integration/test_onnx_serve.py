"""The daemon (in-process) with `--model DIR`: the converted ONNX demo model, and a corrupt model directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edged.clients.socket import RemoteError
from edged.convert.onnx_export import convert_gguf
from edged.paths import demo_model_path
from tests.inprocess import InProcessDaemon

pytestmark = pytest.mark.slow  # starts a daemon or loads a model

QUESTION = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 24,
            "stream": True}


def converted_demo(factory: pytest.TempPathFactory) -> Path:
    """The demo model converted once per test session (shared with test_onnx_smollm2.py by location)."""
    out = factory.getbasetemp() / "onnx-smollm2"
    if not (out / "edged_model.json").exists():
        convert_gguf(demo_model_path(), out)
    return out


def test_serves_an_onnx_model_directory(tmp_path, tmp_path_factory):
    model_dir = converted_demo(tmp_path_factory)
    daemon = InProcessDaemon(tmp_path / "d", "--model", str(model_dir)).start()
    try:
        with daemon.client() as client:
            events = list(client.ask(QUESTION))
        text = "".join(choice.get("delta", {}).get("content") or ""
                       for event in events for choice in event.get("choices", []))
        assert text.strip()
        assert events[-1]["usage"]["completion_tokens"] > 0
        loaded = [line for line in daemon.log_lines() if line.get("event") == "model loaded"]
        assert loaded and loaded[0]["format"] == "onnx" and loaded[0]["path"] == str(model_dir)
    finally:
        daemon.kill()


def test_corrupt_model_directory_gives_model_unavailable(tmp_path, tmp_path_factory):
    model_dir = shutil.copytree(converted_demo(tmp_path_factory), tmp_path / "broken")
    (model_dir / "model.onnx").write_bytes(b"this is not a protobuf")
    daemon = InProcessDaemon(tmp_path / "d", "--model", str(model_dir)).start()
    try:
        with daemon.client() as client, pytest.raises(RemoteError) as caught:
            list(client.ask(QUESTION))
        assert caught.value.code == "model_unavailable"
        assert "onnxruntime could not load" in caught.value.message
        assert daemon.alive()  # still serving
    finally:
        daemon.kill()


def test_model_directory_without_config_gives_model_unavailable(tmp_path):
    Path(tmp_path / "empty").mkdir()
    daemon = InProcessDaemon(tmp_path / "d", "--model", str(tmp_path / "empty")).start()
    try:
        with daemon.client() as client, pytest.raises(RemoteError) as caught:
            list(client.ask(QUESTION))
        assert caught.value.code == "model_unavailable" and "edged_model.json is missing" in caught.value.message
    finally:
        daemon.kill()
