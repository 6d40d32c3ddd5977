"""Turn a job's events into OpenAI-shaped objects for any transport, coalescing tokens that queue up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, Awaitable, Callable

from edged.job import Job
from edged.errors import error_object
from edged.messages import Completion, ErrorEvent, FinalEvent, TokenEvent

# send(obj, final, error) writes one event; it is awaited, so a slow client slows only its own stream.
Send = Callable[[dict[str, Any], bool, bool], Awaitable[None]]


async def relay_events(job: Job, model: str, send: Send, min_interval_s: float = 0.0) -> str:
    """Forward every event of `job` through `send`; returns the outcome ("ok" or an error code).

    Tokens that arrived while the previous write was in progress go out together in one chunk, so
    a busy link sends fewer, larger chunks. With `min_interval_s` (for MQTT, where a publish never
    blocks) chunks after the first are at least that far apart: the first token is never delayed,
    and later ones wait at most that long (e2e-v1 §4 asks for a flush at least every 100 ms).
    """
    completion = Completion(request_id=job.request_id, model=model, created=int(time.time()),
                            stream=job.request.stream)
    events = job.events
    pending: object = None
    while True:
        event = pending if pending is not None else await events.get()
        pending = None
        if isinstance(event, TokenEvent):
            text = event.text
            while event.tool_calls is None and not events.empty():
                following = events.get_nowait()
                if isinstance(following, TokenEvent) and following.tool_calls is None:
                    text += following.text
                    continue
                pending = following  # a tool-call piece, the final event or an error: sent next
                break
            await send(completion.chunk(text, event.tool_calls), False, False)
            if min_interval_s:
                await asyncio.sleep(min_interval_s)
            continue
        if isinstance(event, FinalEvent):
            await send(completion.final(event), True, False)
            return "ok"
        if isinstance(event, ErrorEvent):
            await send(error_object(event.code, event.message), True, True)
            return event.code


async def answer_unless_hung_up(job: Job, closed: asyncio.Event, answer: Coroutine[Any, Any, Any], who: str) -> None:
    """Run ``answer`` (the relay of ``job``) until it ends or ``closed`` is set; a hang-up cancels the job.

    The core stops generating at the next token, so a client that goes away frees the model at once.
    """
    hangup = asyncio.create_task(closed.wait(), name=f"{who}-hangup-{job.request_id}")
    reply = asyncio.create_task(answer, name=f"{who}-reply-{job.request_id}")
    try:
        done, _ = await asyncio.wait({hangup, reply}, return_when=asyncio.FIRST_COMPLETED)
        if reply not in done:
            job.cancel("client disconnected")
            raise ConnectionResetError(f"{who} client went away mid-answer")
        reply.result()
    finally:
        for task in (hangup, reply):
            task.cancel()
        await asyncio.gather(hangup, reply, return_exceptions=True)
        if not job.finished:
            job.cancel("client disconnected")
