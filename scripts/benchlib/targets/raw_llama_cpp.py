"""Raw llama-cpp-python (high-level `Llama.create_chat_completion(stream=True)`) in a worker process.

The worker times each request itself, so TTFT here is in-process: no transport at all. That makes it
the "what you get by calling the library directly" baseline for edged's socket path.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from typing import Any

from benchlib import procs
from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.settings import REPO, VENV_PYTHON
from benchlib.targets.base import CHAT, PROCESS, StartupInfo, Target

READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0


class RawLlamaCppTarget(Target):
    name = "llama-cpp-python"
    label = "raw llama-cpp-python"
    capabilities = frozenset({CHAT, PROCESS})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = self.context.run_dir / "llama-cpp-python.log"
        self._cmd: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> StartupInfo:
        shape = self.context.engine
        self._cmd = [str(VENV_PYTHON), "-m", "benchlib.raw_worker", "--model", str(self.context.model_path),
                     "--threads", str(shape.threads), "--context", str(shape.context), "--batch", str(shape.batch)]
        if not shape.mmap:
            self._cmd.append("--no-mmap")
        env = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "PYTHONUNBUFFERED": "1"}
        started = time.perf_counter()
        with self._log_path.open("wb") as log:
            self._proc = procs.spawn(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env)
        ready = self._read_line(READY_TIMEOUT_S, "start")
        return StartupInfo(ready_s=time.perf_counter() - started,
                           details={"import_s": ready["import_s"], "load_s": ready["load_s"]})

    def _read_line(self, timeout_s: float, what: str) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        readable, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        line = self._proc.stdout.readline() if readable else b""
        if not line:
            state = "exited" if self._proc.poll() is not None else f"gave no answer within {timeout_s:.0f} s"
            raise RuntimeError(f"the llama-cpp-python worker {state} ({what})" + procs.log_tail(self._log_path))
        return json.loads(line)

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        assert self._proc is not None and self._proc.stdin is not None
        request = {"messages": messages, "max_tokens": max_tokens, "prompt_id": prompt_id}
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        self._proc.stdin.flush()
        result = self._read_line(REQUEST_TIMEOUT_S, f"request {prompt_id}")
        if result["ttft_s"] is None:
            raise RuntimeError("llama-cpp-python streamed no content")
        return RequestSample(prompt_id=prompt_id, ttft_s=result["ttft_s"], first_to_last_s=result["first_to_last_s"],
                             completion_tokens=result["completion_tokens"], finish_reason=result["finish_reason"],
                             token_source=result["token_source"])

    def stop(self) -> dict[str, Any]:
        if self._proc is None:
            return {}
        if self._proc.stdin is not None:
            self._proc.stdin.close()   # the worker's signal to exit on its own
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        return {"exit_status": procs.stop(self._proc)}

    def describe(self) -> dict[str, Any]:
        return {"command": " ".join(self._cmd), "log": str(self._log_path),
                "note": "Llama() defaults otherwise (flash_attn=False)"}
