"""Idle and half-sent Wyoming connections give their slot back; a long answer is never cut for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from wyoming.asr import Transcript
from wyoming.client import AsyncClient
from wyoming.handle import Handled
from wyoming.info import Describe, Info

from edged.transports import wyoming
from tests.fakes import FakeEngine
from tests.unit.test_wyoming_transport import Server, events_until, run

IDLE_S = 0.3


@pytest.fixture(autouse=True)
def short_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wyoming, "IDLE_TIMEOUT_S", IDLE_S)


def test_an_idle_connection_is_closed_and_its_slot_serves_the_next_client(tmp_path: Path) -> None:
    async def main() -> tuple[object, object]:
        async with Server(tmp_path, FakeEngine(), max_connections=1) as server:
            async with AsyncClient.from_uri(server.uri) as idle:
                gone = await asyncio.wait_for(idle.read_event(), 10)  # it sends nothing: closed by the server
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Describe().event())
                return gone, await client.read_event()

    gone, info = run(main())
    assert gone is None and info is not None and Info.is_type(info.type)


def test_a_half_sent_event_is_closed_after_the_timeout(tmp_path: Path) -> None:
    async def main() -> bytes:
        async with Server(tmp_path, FakeEngine(), max_connections=1) as server:
            reader, writer = await asyncio.open_unix_connection(server.uri.removeprefix("unix://"))
            writer.write(b'{"type": "transcript", "data": {"te')  # and never the rest
            await writer.drain()
            rest = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            return rest

    assert run(main()) == b""


def test_an_answer_longer_than_the_idle_timeout_is_not_cut(tmp_path: Path) -> None:
    async def main() -> list[object]:
        async with Server(tmp_path, FakeEngine(tokens=8, delay_s=IDLE_S / 2)) as server:  # ~4 x the timeout
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="take your time").event())
                return await events_until(client, "handled-stop")

    events = run(main())
    final = next(Handled.from_event(e) for e in events if Handled.is_type(e.type))
    assert final.text == " ".join(f"t{i}" for i in range(8))
