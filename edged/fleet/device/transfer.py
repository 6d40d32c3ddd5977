"""The device's pull loop: a window of requested chunks, re-requests on an idle timer, bounded retries."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import structlog

from edged.errors import UpdateError
from edged.fleet.messages import KIND_ERROR, ChunkFrame, PullRequest, parse_chunk
from edged.fleet.device.partial import PartialDownload
from edged.fleet.settings import UpdateSettings
from edged.mqtt.inbound import AsyncInbox, InboundMessage

logger = structlog.get_logger(__name__)

PAUSED_TICK_S = 0.5  # how often a paused download looks again whether it may go on
Receive = Callable[[], Awaitable[bytes]]
SendPull = Callable[[PullRequest], None]
Gate = Callable[[], str | None]  # None = requests may go out, else why not ("profile", "offline")
Progress = Callable[[int, int, str | None], None]  # bytes done, bytes total, pause reason


@dataclass
class TransferStats:
    received: int = 0
    duplicates: int = 0
    stale: int = 0
    garbled: int = 0
    malformed: int = 0
    depot_errors: int = 0
    requests: int = 0
    re_requests: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ChunkTransfer:
    """Pulls the missing chunks of one artifact of one manifest version into a ``PartialDownload``.

    Chunks are checked before they touch the file: another channel, version or artifact (a stale
    depot, an old retained request) is refused; a frame whose data does not match its own SHA-256
    or whose length is wrong is refused and that chunk is asked for again at once. A chunk still
    missing ``idle_timeout_s`` after its request is asked for again; after ``max_retries`` requests
    of one chunk the download fails with reason ``transfer`` (the partial file stays for a resume).
    """

    def __init__(
        self,
        partial: PartialDownload,
        channel: str,
        version: int,
        settings: UpdateSettings,
        send: SendPull,
        gate: Gate,
        progress: Progress,
    ) -> None:
        self.partial = partial
        self.channel = channel
        self.version = version
        self.artifact = partial.artifact.name
        self.settings = settings
        self._send = send
        self._gate = gate
        self._progress = progress
        self.stats = TransferStats()
        self._pending: deque[int] = deque(partial.missing())
        self._outstanding: dict[int, float] = {}  # index -> when it was (last) requested
        self._attempts: dict[int, int] = {}
        self._unsynced = 0
        self._window = settings.window_chunks(partial.chunk_size)
        self._batch = settings.request_chunks(partial.chunk_size)

    async def run(self, receive: Receive) -> TransferStats:
        """Return when every chunk is on disk and durable; raise UpdateError("transfer") when retries run out."""
        paused: str | None = None
        try:
            while not self.partial.complete:
                now = time.monotonic()
                gate = self._gate()
                if gate != paused:
                    paused = gate
                    self._report(paused)
                if gate is None:
                    self._fill_window(now)
                else:
                    # Not our fault: chunks asked for before the pause are not held against the retries.
                    self._requeue(list(self._outstanding), count=False)
                try:
                    payload = await asyncio.wait_for(receive(), self._wait_time(now, paused))
                except TimeoutError:
                    self._expire(time.monotonic())
                    continue
                await self._accept(payload)
            await asyncio.to_thread(self.partial.sync)
        finally:
            self.partial.sync()  # keep what arrived for the next attempt, also when cancelled
        logger.info("download complete", artifact=self.artifact, version=self.version, **self.stats.as_dict())
        return self.stats

    def _wait_time(self, now: float, paused: str | None) -> float:
        if paused is not None or not self._outstanding:
            return PAUSED_TICK_S
        oldest = min(self._outstanding.values())
        return max(0.0, oldest + self.settings.idle_timeout_s - now)

    def _fill_window(self, now: float) -> None:
        batch, window = self._batch, self._window
        # Wait until a whole request's worth of the window is free: fewer, fuller pull messages.
        while self._pending and window - len(self._outstanding) >= min(batch, len(self._pending)):
            first = self._pending.popleft()
            if self.partial.has(first) or first in self._outstanding:
                continue
            indices = [first]
            # Extend with the following chunks while they are consecutive and still wanted.
            room = min(batch, window - len(self._outstanding))
            while len(indices) < room and self._pending and self._pending[0] == indices[-1] + 1:
                candidate = self._pending.popleft()
                if self.partial.has(candidate) or candidate in self._outstanding:
                    break
                indices.append(candidate)
            for index in indices:
                attempts = self._attempts.get(index, 0) + 1
                if attempts > self.settings.max_retries:
                    raise UpdateError(
                        "transfer", f"chunk {index} still missing after {self.settings.max_retries} requests"
                    )
                self._attempts[index] = attempts
                if attempts > 1:
                    self.stats.re_requests += 1
                self._outstanding[index] = now
            self.stats.requests += 1
            self._send(
                PullRequest(
                    channel=self.channel, version=self.version, artifact=self.artifact, first=first, count=len(indices)
                )
            )

    def _expire(self, now: float) -> None:
        late = [i for i, sent in self._outstanding.items() if sent + self.settings.idle_timeout_s <= now]
        if late:
            logger.debug("chunks timed out", count=len(late), first=min(late))
            self._requeue(late)

    def _requeue(self, indices: list[int], count: bool = True) -> None:
        for index in sorted(indices, reverse=True):
            self._outstanding.pop(index, None)
            if not count:
                self._attempts[index] = max(0, self._attempts.get(index, 0) - 1)
            self._pending.appendleft(index)

    async def _accept(self, payload: bytes) -> None:
        try:
            frame = parse_chunk(payload)
        except UpdateError:
            self.stats.malformed += 1
            return
        header = frame.header
        if (header.channel, header.version, header.artifact) != (self.channel, self.version, self.artifact):
            self.stats.stale += 1
            return
        if header.kind == KIND_ERROR:
            self.stats.depot_errors += 1
            if self.stats.depot_errors == 1 or self.stats.depot_errors % 100 == 0:
                logger.warning("depot refused request", index=header.index, reason=frame.error_text())
            return
        index = header.index
        if index >= self.partial.chunk_count:
            self.stats.garbled += 1
            return
        if self.partial.has(index):
            self.stats.duplicates += 1
            return
        if len(frame.data) != self.partial.expected_length(index) or not frame.data_is_intact():
            self.stats.garbled += 1
            if index in self._outstanding:
                self._requeue([index])  # ask again now instead of waiting for the idle timer
            return
        self._store(index, frame)
        if self._unsynced >= self.settings.sync_bytes:
            await asyncio.to_thread(self.partial.sync)
            self._unsynced = 0

    def _store(self, index: int, frame: ChunkFrame) -> None:
        self.partial.write(index, frame.data)
        self._outstanding.pop(index, None)
        self.stats.received += 1
        self._unsynced += len(frame.data)
        self._progress(self.partial.bytes_done, self.partial.artifact.size, None)

    def _report(self, paused: str | None) -> None:
        logger.info("download paused" if paused else "download running", reason=paused, artifact=self.artifact)
        self._progress(self.partial.bytes_done, self.partial.artifact.size, paused)


class ChunkInbox:
    """Chunk messages from paho's thread to the pull loop, bounded in bytes as well as in count.

    Chunks only come in answer to requests, so more than twice the window waiting means a
    duplicating or flooding sender: those are dropped (and asked for again if they were wanted),
    and a Pi's memory stays bounded whatever the depot does.
    """

    def __init__(self, inbox: AsyncInbox, max_bytes: int) -> None:
        self._inbox = inbox
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._bytes = 0
        self.dropped = 0

    def __call__(self, message: InboundMessage) -> None:  # paho's thread
        size = len(message.payload)
        with self._lock:
            if self._bytes + size > self._max_bytes:
                self.dropped += 1
                return
            self._bytes += size
        self._inbox(message)

    async def get(self) -> bytes:
        message = await self._inbox.get()
        with self._lock:
            self._bytes -= len(message.payload)
        return message.payload
