"""edged with [wyoming] on a Unix socket: asked with the wyoming package's own client, timed against the core.

Each transcript's first `handled-chunk` is timed on the client from the moment the transcript is written;
the core's own time to first token for the same request comes from the daemon's JSON `request` log line
(one request at a time, so the newest `transport: wyoming` line is this request's). Their difference is
what the Wyoming path adds after the core has its first token, plus reading and parsing the transcript:
an upper bound for "first handled-chunk after the core's first token".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from benchlib.targets.base import PROCESS, WYOMING
from benchlib.targets.edged_socket import REQUEST_TIMEOUT_S, EdgedSocketTarget

LOG_WAIT_S = 10.0


class EdgedWyomingTarget(EdgedSocketTarget):
    name = "edged-wyoming"
    label = "edged (Wyoming)"
    capabilities = frozenset({PROCESS, WYOMING})

    @property
    def wyoming_uri(self) -> str:
        return f"unix://{self._dir / 'wyoming.sock'}"

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["EDGED_WYOMING__URI"] = self.wyoming_uri
        env["EDGED_WYOMING__SYSTEM_PROMPT"] = ""  # the transcript alone: the prompt is not what is measured
        env["EDGED_WYOMING__MAX_TOKENS"] = str(self.context.settings.tokens)
        return env

    def transcript(self, text: str) -> dict[str, Any]:
        """One transcript: client time to the first handled-chunk, the core's TTFT for it, and the answer length."""
        seen = len(self._wyoming_lines())
        first_chunk_s, chunks, answer = asyncio.run(asyncio.wait_for(self._ask(text), REQUEST_TIMEOUT_S))
        deadline = time.monotonic() + LOG_WAIT_S
        while len(lines := self._wyoming_lines()) <= seen:
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon logged no request line for the Wyoming transcript")
            time.sleep(0.01)
        line = lines[-1]
        if line.get("outcome") != "ok":
            raise RuntimeError(f"the Wyoming request ended with {line.get('outcome')}")
        core_ttft_ms = float(line["time_to_first_token_ms"])
        return {"client_first_chunk_ms": first_chunk_s * 1000, "core_ttft_ms": core_ttft_ms,
                "added_ms": first_chunk_s * 1000 - core_ttft_ms, "chunks": chunks,
                "completion_tokens": line.get("output_tokens"), "answer_chars": len(answer)}

    async def _ask(self, text: str) -> tuple[float, int, str]:
        from wyoming.asr import Transcript
        from wyoming.client import AsyncClient
        from wyoming.handle import Handled, HandledChunk

        async with AsyncClient.from_uri(self.wyoming_uri) as client:  # connected before the clock starts
            sent = time.perf_counter()
            await client.write_event(Transcript(text=text).event())
            first, chunks, answer = 0.0, 0, ""
            while True:
                event = await client.read_event()
                if event is None:
                    raise RuntimeError("the Wyoming connection closed before the answer")
                if HandledChunk.is_type(event.type):
                    first = first or time.perf_counter() - sent
                    chunks += 1
                elif Handled.is_type(event.type):
                    answer = Handled.from_event(event).text or ""
                elif event.type == "handled-stop":
                    break
                elif event.type in ("not-handled", "error"):
                    raise RuntimeError(f"edged answered {event.type}: {event.data.get('text')}")
            if not first:
                raise RuntimeError("no handled-chunk came (is [wyoming] streaming off?)")
            return first, chunks, answer

    def _wyoming_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self._log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "request" and event.get("transport") == "wyoming":
                lines.append(event)
        return lines
