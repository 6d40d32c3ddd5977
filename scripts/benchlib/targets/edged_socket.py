"""edged itself: `python -m edged serve` as a subprocess, asked over its Unix socket with edged.clients.socket.

Written so variants are subclasses that change one thing: `prepare` (keys, a broker, a converted model
before the start), `serve_args`/`environment` (another model, MQTT), `chat` (another transport). The
helpers `chat_body` and `sample_from_events` time any transport's stream of OpenAI chunk events alike.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any, Iterable

from edged.clients.socket import SocketClient
from edged.errors import EdgedError

from benchlib import procs
from benchlib.prompts import Messages
from benchlib.samples import RequestSample
from benchlib.settings import EDGED_PROFILE, PROFILES_DIR, REPO, VENV_PYTHON
from benchlib.targets.base import CHAT, EDGED_DAEMON, PROCESS, SERVER, EngineShape, StartupInfo, Target

READY_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 300.0


def profile_engine_shape(profile: str, threads: int) -> EngineShape:
    """The engine section of a shipped profile, with the benchmark's thread count."""
    engine = tomllib.loads((PROFILES_DIR / f"{profile}.toml").read_text())["engine"]
    return EngineShape(threads=threads, context=int(engine["context"]), batch=int(engine["batch"]),
                       kv_cache_type=str(engine["kv_cache_type"]), mmap=bool(engine["mmap"]))


def profiles_with_threads(profile: str, threads: int, into: Path) -> Path | None:
    """A copy of the shipped profiles whose `profile` has `engine.threads = threads`; None if already so."""
    source = (PROFILES_DIR / f"{profile}.toml").read_text()
    if int(tomllib.loads(source)["engine"]["threads"]) == threads:
        return None
    shutil.copytree(PROFILES_DIR, into, dirs_exist_ok=True)  # all of them: the governor may name any
    patched, count = re.subn(r"(?m)^(threads\s*=\s*)\d+", rf"\g<1>{threads}", source, count=1)
    if count != 1 or int(tomllib.loads(patched)["engine"]["threads"]) != threads:
        raise RuntimeError(f"could not set engine.threads in a copy of {profile}.toml")
    (into / f"{profile}.toml").write_text(patched)
    return into


def chat_body(messages: Messages, max_tokens: int, priority: str | None = None) -> dict[str, Any]:
    """The greedy, streamed OpenAI chat request every edged transport gets."""
    body: dict[str, Any] = {"messages": messages, "stream": True, "max_tokens": max_tokens, "temperature": 0}
    if priority is not None:
        body["priority"] = priority
    return body


def sample_from_events(prompt_id: str, events: Iterable[dict[str, Any]], sent: float) -> RequestSample:
    """Time a stream of OpenAI chunk events (any transport) from `sent` to its first and last content."""
    first = last = 0.0
    final: dict[str, Any] = {}
    for event in events:
        for choice in event.get("choices", []):
            if (choice.get("delta") or {}).get("content"):
                last = time.perf_counter()
                first = first or last
        if "edged" in event:
            final = event
    if not first:
        raise RuntimeError("edged streamed no content")
    if not final:
        raise RuntimeError("edged's stream ended without the final event (usage and edged statistics)")
    usage, stats = final.get("usage", {}), final.get("edged", {})
    return RequestSample(prompt_id=prompt_id, ttft_s=first - sent, first_to_last_s=last - first,
                         completion_tokens=int(usage.get("completion_tokens", 0)),
                         finish_reason=final["choices"][0].get("finish_reason") or "unknown",
                         prompt_tokens=usage.get("prompt_tokens"),
                         cached_prompt_tokens=stats.get("prompt_cached_tokens"), server={"edged": stats})


class EdgedSocketTarget(Target):
    name = "edged"
    label = "edged (socket)"
    capabilities = frozenset({CHAT, PROCESS, SERVER, EDGED_DAEMON})
    profile = EDGED_PROFILE
    check_threads = True      # the status op's model.threads must show the benchmark's thread count

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = self.context.run_dir / self.name
        self._socket = self._dir / "edged.sock"
        self._log_path = self._dir / "edged.log"
        self._cmd: list[str] = []
        self._profiles_dir: Path | None = None
        self._spawned_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def socket_path(self) -> Path:
        return self._socket

    @property
    def state_dir(self) -> Path:
        return self._dir / "state"

    def prepare(self) -> None:
        """Before the daemon starts: subclasses provision keys, start a broker, convert a model."""

    def serve_args(self) -> list[str]:
        return ["--socket", str(self._socket), "--state-dir", str(self.state_dir), "--profile", self.profile]

    def environment(self) -> dict[str, str]:
        # The daemon must not pick up the caller's EDGED_* settings (another socket, MQTT, a config).
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGED_")}
        env["PYTHONUNBUFFERED"] = "1"
        if self._profiles_dir is not None:
            env["EDGED_PROFILE__DIRECTORY"] = str(self._profiles_dir)
        return env

    def start(self) -> StartupInfo:
        self._dir.mkdir(parents=True, exist_ok=True)
        self._profiles_dir = profiles_with_threads(self.profile, self.context.engine.threads, self._dir / "profiles")
        self.prepare()
        self._cmd = [str(VENV_PYTHON), "-m", "edged", "serve", *self.serve_args()]
        started = self._spawned_at = time.perf_counter()
        with self._log_path.open("wb") as log:
            self._proc = procs.spawn(self._cmd, stdout=log, stderr=subprocess.STDOUT, env=self.environment(), cwd=REPO)
        status: dict[str, Any] = {}

        def model_loaded() -> bool:
            nonlocal status
            try:
                with SocketClient(self._socket, timeout=5) as client:
                    status = client.control("status")
            except (EdgedError, OSError, ValueError):
                return False
            if status.get("model_error"):
                raise RuntimeError(f"edged could not load the model: {status['model_error']}")
            return status.get("model") is not None

        procs.wait_until(model_loaded, self._proc, READY_TIMEOUT_S, "edged serve", self._log_path)
        ready_s = time.perf_counter() - started
        expected = min(self.context.engine.threads, os.cpu_count() or 1)   # the engine clamps to the CPUs
        if self.check_threads and (status.get("model") or {}).get("threads") != expected:
            raise RuntimeError(f"edged runs {status['model'].get('threads')} threads, not {expected}: "
                               f"the profile override in {self._profiles_dir} did not take effect")
        with SocketClient(self._socket, timeout=10) as client:
            # An operator override pins the profile, so the governor cannot switch it mid-run.
            client.control("profile", set=self.profile)
        return StartupInfo(ready_s=ready_s, details={"model": status.get("model"), "profile": status.get("profile"),
                                                     "daemon_startup_s": self._logged_startup_s()})

    def _logged_startup_s(self, wait_s: float = 2.0) -> float | None:
        """The daemon's own start-up time, from its JSON "ready" log line (None if not found).

        The line may come a little after the socket answers (e.g. once the MQTT link is up): wait for it.
        """
        deadline = time.monotonic() + wait_s
        while True:
            for line in self._log_path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and event.get("event") == "ready":
                    return event.get("startup_s")
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def chat(self, messages: Messages, max_tokens: int, prompt_id: str) -> RequestSample:
        return self.socket_chat(messages, max_tokens, prompt_id)

    def socket_chat(self, messages: Messages, max_tokens: int, prompt_id: str,
                    priority: str | None = None) -> RequestSample:
        """A plaintext request over the Unix socket (the connection is made before the clock starts)."""
        with SocketClient(self._socket, timeout=REQUEST_TIMEOUT_S) as client:
            sent = time.perf_counter()
            return sample_from_events(prompt_id, client.ask(chat_body(messages, max_tokens, priority)), sent)

    def control(self, op: str, **fields: Any) -> dict[str, Any]:
        with SocketClient(self._socket, timeout=60) as client:
            return client.control(op, **fields)

    def stop(self) -> dict[str, Any]:
        if self._proc is None:
            return {}
        return {"exit_status": procs.stop(self._proc, grace_s=30.0)}

    def describe(self) -> dict[str, Any]:
        return {"command": " ".join(self._cmd), "log": str(self._log_path),
                "profile": self.profile + (" (copy with engine.threads changed)" if self._profiles_dir else ""),
                "note": "profile pinned with the `profile` control op after start"}
