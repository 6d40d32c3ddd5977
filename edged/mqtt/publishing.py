"""Outgoing messages: a handle per publish that completes on PUBACK, awaitable from asyncio."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import structlog
from pydantic import Field

from edged.validation import StrictModel

logger = structlog.get_logger(__name__)

AckCallback = Callable[["PublishHandle"], None]


class StatusMessage(StrictModel):
    """A QoS 1 message about the link itself: the will, or a final message sent by stop()."""

    topic: str = Field(min_length=1, max_length=65535, description="Topic, no wildcards")
    payload: bytes = Field(max_length=65535, description="Payload, e.g. a small status JSON")
    retain: bool = Field(default=True, description="Keep it on the broker for late subscribers")


class PublishHandle:
    """The fate of one publish: acknowledged by the broker, or failed with a reason.

    QoS 1: done when the PUBACK arrives (``ok`` is False if an MQTT 5 broker answered with a
    failure reason code, e.g. "Not authorized"). QoS 0: done when the message was written to
    the socket. A publish refused locally (queue full, QoS 0 while offline, link stopped) is
    done at once with ``ok`` False. Completion happens on paho's network thread.
    """

    def __init__(self, mid: int, topic: str, qos: int) -> None:
        self.mid = mid
        self.topic = topic
        self.qos = qos
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ok = False
        self._failure: str | None = None
        self._callbacks: list[AckCallback] = []

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def ok(self) -> bool:
        """True once the broker acknowledged the message successfully."""
        return self._done.is_set() and self._ok

    @property
    def failure(self) -> str | None:
        """Why the publish failed, or None (pending or acknowledged)."""
        return self._failure

    def on_ack(self, callback: AckCallback) -> None:
        """Call ``callback(handle)`` once when done (at once if already done); it must not block.

        It runs on paho's network thread while paho holds its outgoing-message lock, so it may
        publish again but must not wait for anything. Exceptions are logged and swallowed.
        """
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(callback)
                return
        _call_quietly(callback, self)

    def wait(self, timeout: float) -> bool:
        """Block this (non-network) thread up to ``timeout`` seconds; True if acknowledged."""
        self._done.wait(timeout)
        return self.ok

    async def acked(self, timeout: float) -> bool:
        """Wait in asyncio up to ``timeout`` seconds; True if acknowledged, False if failed or late."""
        if not self._done.is_set():
            loop = asyncio.get_running_loop()
            finished: asyncio.Future[None] = loop.create_future()

            def wake(_: PublishHandle) -> None:
                try:
                    loop.call_soon_threadsafe(_resolve, finished)
                except RuntimeError:
                    pass  # the loop is closed: nobody is waiting any more

            self.on_ack(wake)
            try:
                await asyncio.wait_for(finished, timeout)
            except TimeoutError:
                return False
        return self.ok

    def complete(self, ok: bool, failure: str | None = None) -> None:
        """Record the outcome once and run the callbacks; later calls are ignored."""
        with self._lock:
            if self._done.is_set():
                return
            self._ok = ok
            self._failure = None if ok else (failure or "failed")
            self._done.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _call_quietly(callback, self)


class PendingPublishes:
    """Handles by message id, waiting for their PUBACK.

    paho may deliver the PUBACK (on its thread) before ``client.publish()`` has returned the mid
    to us, and it calls on_publish while holding its own lock, so we must never hold ours around
    ``client.publish()``. An ack for an unknown mid is parked and claimed by ``register``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, PublishHandle] = {}
        self._early: dict[int, tuple[bool, str | None]] = {}

    def register(self, handle: PublishHandle) -> None:
        with self._lock:
            early = self._early.pop(handle.mid, None)
            if early is None:
                self._waiting[handle.mid] = handle
        if early is not None:
            handle.complete(*early)

    def forget(self, mid: int) -> None:
        """Drop any parked ack for a mid whose publish was refused locally."""
        with self._lock:
            self._early.pop(mid, None)

    def resolve(self, mid: int, ok: bool, failure: str | None = None) -> PublishHandle | None:
        with self._lock:
            handle = self._waiting.pop(mid, None)
            if handle is None:
                self._early[mid] = (ok, failure)
                return None
        handle.complete(ok, failure)
        return handle

    def fail_all(self, failure: str) -> int:
        """Fail every waiting handle (the link stopped); returns how many there were."""
        with self._lock:
            waiting, self._waiting = self._waiting, {}
            self._early.clear()
        for handle in waiting.values():
            handle.complete(False, failure)
        return len(waiting)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiting)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _call_quietly(callback: AckCallback, handle: PublishHandle) -> None:
    try:
        callback(handle)
    except Exception:
        logger.exception("mqtt ack callback raised", topic=handle.topic, mid=handle.mid)
