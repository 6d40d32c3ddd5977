"""PublishHandle and PendingPublishes: PUBACK before registration, callbacks, asyncio waiting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from edged.mqtt.publishing import PendingPublishes, PublishHandle


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_ack_that_arrives_before_registration_is_not_lost() -> None:
    pending = PendingPublishes()
    assert pending.resolve(7, True) is None  # paho's thread was faster than publish() returning
    handle = PublishHandle(7, "edged/d/t", 1)
    pending.register(handle)
    assert handle.ok and handle.done
    assert len(pending) == 0


def test_refused_publish_forgets_a_parked_ack() -> None:
    pending = PendingPublishes()
    pending.resolve(9, True)
    pending.forget(9)
    later = PublishHandle(9, "t", 1)  # mid 9 reused much later
    pending.register(later)
    assert not later.done


def test_broker_failure_reason_is_kept() -> None:
    pending = PendingPublishes()
    handle = PublishHandle(3, "t", 1)
    pending.register(handle)
    assert pending.resolve(3, False, "Not authorized") is handle
    assert handle.done and not handle.ok
    assert handle.failure == "Not authorized"


def test_fail_all_fails_every_waiting_handle() -> None:
    pending = PendingPublishes()
    handles = [PublishHandle(mid, "t", 1) for mid in (1, 2, 3)]
    for handle in handles:
        pending.register(handle)
    assert pending.fail_all("link stopped") == 3
    assert all(h.failure == "link stopped" for h in handles)
    assert len(pending) == 0


def test_on_ack_runs_once_and_at_once_when_already_done() -> None:
    handle = PublishHandle(1, "t", 1)
    seen: list[bool] = []
    handle.on_ack(lambda h: seen.append(h.ok))
    handle.complete(True)
    handle.complete(False, "late duplicate")  # ignored
    handle.on_ack(lambda h: seen.append(h.ok))
    assert seen == [True, True]
    assert handle.ok and handle.failure is None


def test_a_raising_ack_callback_does_not_stop_the_others() -> None:
    handle = PublishHandle(1, "t", 1)
    seen: list[int] = []

    def boom(_: PublishHandle) -> None:
        raise RuntimeError("spool bug")

    handle.on_ack(boom)
    handle.on_ack(lambda h: seen.append(h.mid))
    handle.complete(True)
    assert seen == [1]


def test_acked_wakes_asyncio_from_another_thread() -> None:
    handle = PublishHandle(5, "t", 1)

    async def scenario() -> bool:
        asyncio.get_running_loop().call_later(0.01, threading.Thread(target=handle.complete, args=(True,)).start)
        return await handle.acked(timeout=10)

    assert run(scenario()) is True


def test_acked_returns_false_on_failure_and_on_timeout() -> None:
    failed = PublishHandle(1, "t", 1)
    failed.complete(False, "Message queue full.")
    never = PublishHandle(2, "t", 1)

    async def scenario() -> tuple[bool, bool]:
        return await failed.acked(timeout=1), await never.acked(timeout=0.01)

    assert run(scenario()) == (False, False)
    assert not never.done


def test_completion_after_the_loop_closed_is_harmless() -> None:
    handle = PublishHandle(1, "t", 1)
    assert run(handle.acked(timeout=0.01)) is False  # leaves a wake callback for a closed loop
    handle.complete(True)
    assert handle.ok


def test_wait_blocks_a_plain_thread_until_done() -> None:
    handle = PublishHandle(1, "t", 1)
    threading.Timer(0.01, handle.complete, args=(True,)).start()
    assert handle.wait(10) is True
