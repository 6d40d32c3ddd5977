"""One admitted request on its way through the core: its events, cancel flag, deadline and pace."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from edged.messages import PRIORITY_RANK, ChatRequest, ErrorEvent, Event, FinalEvent
from edged.summary import RequestSummary

if TYPE_CHECKING:
    from edged.power.profiles import PaceSettings

__all__ = ["Job", "Pacer", "RequestSummary"]


@dataclass(eq=False)
class Job:
    request_id: str
    request: ChatRequest
    transport: str
    peer: str
    client: str | None
    deadline: float  # time.monotonic()
    order: int
    submitted: float = field(default_factory=time.monotonic)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    started: bool = False
    finished: bool = False

    @property
    def sort_key(self) -> tuple[int, int]:
        return PRIORITY_RANK[self.request.priority], self.order

    def __lt__(self, other: "Job") -> bool:
        return self.sort_key < other.sort_key

    def cancel(self, reason: str) -> None:
        """Ask generation to stop before the next token; safe from any thread, first reason wins."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel_flag.set()

    def push(self, event: Event) -> None:
        if not self.finished:
            self.events.put_nowait(event)
            if isinstance(event, (FinalEvent, ErrorEvent)):
                self.finished = True

    async def stream(self) -> AsyncIterator[Event]:
        """The job's events in order, ending with a FinalEvent or an ErrorEvent."""
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, (FinalEvent, ErrorEvent)):
                return


class Pacer:
    """The active profile's pace, read by the model thread at every token, so a change applies at once."""

    def __init__(self, pace: "PaceSettings") -> None:
        self.joules_per_token: float | None = None  # the meter's latest figure, for a power budget
        self.set(pace)

    def set(self, pace: "PaceSettings") -> None:
        self.pace = pace
        self.active = (pace.max_tokens_per_s is not None or pace.duty_cycle < 1.0
                       or pace.power_budget_w is not None)

    def pause_after(self, busy_s: float) -> float:
        """Seconds to sleep after a token that took `busy_s` of compute."""
        return self.pace.pause_after_token(busy_s, self.joules_per_token)
