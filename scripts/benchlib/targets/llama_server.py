"""llama.cpp's own llama-server, streamed over loopback HTTP: the "what llama.cpp gives you" baseline."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from typing import Any

from benchlib import procs
from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.targets.base import CHAT, PROCESS, SERVER, StartupInfo, Target

READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0


class LlamaServerTarget(Target):
    name = "llama-server"
    label = "llama-server"
    capabilities = frozenset({CHAT, PROCESS, SERVER})
    needs_llama_cpp_build = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._log_path = self.context.run_dir / "llama-server.log"
        self._cmd: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _command(self) -> list[str]:
        assert self.context.llama_cpp_bin is not None
        shape = self.context.engine
        cmd = [str(self.context.llama_cpp_bin / "llama-server"), "-m", str(self.context.model_path),
               "--host", "127.0.0.1", "--port", str(self._port),
               "-t", str(shape.threads), "-tb", str(shape.threads),
               "-c", str(shape.context), "-b", str(shape.batch), "-ub", str(shape.batch),
               "-ctk", shape.kv_cache_type, "-ctv", shape.kv_cache_type,
               "-np", "1",            # one slot, like edged's single worker: no context split, no batching
               "--no-webui"]
        if not shape.mmap:
            cmd.append("--no-mmap")
        return cmd

    def start(self) -> StartupInfo:
        self._port = procs.free_loopback_port()
        self._cmd = self._command()
        started = time.perf_counter()
        with self._log_path.open("wb") as log:
            self._proc = procs.spawn(self._cmd, stdout=log, stderr=subprocess.STDOUT)
        procs.wait_until(self._healthy, self._proc, READY_TIMEOUT_S, "llama-server", self._log_path)
        return StartupInfo(ready_s=time.perf_counter() - started)

    def _healthy(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=2)
        try:
            conn.request("GET", "/health")
            response = conn.getresponse()
            response.read()
            return response.status == 200   # 503 while the model loads
        except OSError:
            return False
        finally:
            conn.close()

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        body = json.dumps({"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0,
                           "ignore_eos": True, "stream_options": {"include_usage": True}}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=REQUEST_TIMEOUT_S)
        conn.connect()  # outside the timed part, as for the socket targets
        try:
            sent = time.perf_counter()
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            if response.status != 200:
                raise RuntimeError(f"llama-server answered {response.status}: {response.read()[:500]!r}")
            first = last = 0.0
            finish, usage, timings = "", {}, {}
            while True:
                line = response.readline()
                if not line:
                    break
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    break
                event = json.loads(payload)
                for choice in event.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        last = time.perf_counter()
                        first = first or last
                    finish = choice.get("finish_reason") or finish
                usage = event.get("usage") or usage
                timings = event.get("timings") or timings
        finally:
            conn.close()
        if not first:
            raise RuntimeError("llama-server streamed no content")
        completion = usage.get("completion_tokens") or timings.get("predicted_n") or 0
        return RequestSample(prompt_id=prompt_id, ttft_s=first - sent, first_to_last_s=last - first,
                             completion_tokens=int(completion), finish_reason=finish or "unknown",
                             prompt_tokens=usage.get("prompt_tokens"),
                             cached_prompt_tokens=timings.get("cache_n"), token_source="usage",
                             server={"timings": timings})

    def stop(self) -> dict[str, Any]:
        if self._proc is None:
            return {}
        code = procs.stop(self._proc)
        return {"exit_status": code}

    def describe(self) -> dict[str, Any]:
        return {"command": " ".join(self._cmd), "log": str(self._log_path)}
