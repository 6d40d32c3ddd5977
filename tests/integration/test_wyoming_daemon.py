"""The daemon with [wyoming] (in-process): the wyoming package's AsyncClient against the real daemon and model (issue 14)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from wyoming.asr import Transcript
from wyoming.client import AsyncClient
from wyoming.handle import Handled, HandledChunk, NotHandled
from wyoming.info import Describe, Info

from tests.inprocess import InProcessDaemon

pytestmark = pytest.mark.slow
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def voice(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("voice")
    uri = f"unix://{workdir}/wyoming.sock"
    d = InProcessDaemon(workdir / "d", "--profile", "balanced",
                      env={"EDGED_WYOMING__URI": uri, "EDGED_WYOMING__MAX_TOKENS": "48"}).start()
    d.uri = uri  # type: ignore[attr-defined]
    yield d
    d.kill()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def until(client: AsyncClient, last: str) -> list:
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"closed before {last}: {[e.type for e in events]}"
        events.append(event)
        if event.type == last:
            return events


def test_describe_names_the_loaded_model(voice):
    async def main():
        async with AsyncClient.from_uri(voice.uri) as client:
            await client.write_event(Describe().event())
            return Info.from_event(await client.read_event())

    info = run(main())
    (program,) = info.handle
    assert program.supports_handled_streaming and program.version
    (model,) = program.models
    assert model.installed and model.languages == ["en"] and "GGUF" in model.description
    assert model.name == voice.status()["model"]["name"]
    assert model.attribution.name == "HuggingFaceTB"  # the demo GGUF's general.organization
    assert model.version is None  # its file names no version and no signed release installed it


def test_transcript_is_answered_by_the_model_streamed_and_whole(voice):
    async def main():
        async with AsyncClient.from_uri(voice.uri) as client:
            await client.write_event(Transcript(text=QUESTION, language="en").event())
            return await until(client, "handled-stop")

    events = run(main())
    types = [e.type for e in events]
    assert types[0] == "handled-start" and types[-2:] == ["handled", "handled-stop"]
    chunks = "".join(HandledChunk.from_event(e).text for e in events if HandledChunk.is_type(e.type))
    answer = Handled.from_event(events[-2]).text
    assert answer and answer == chunks.strip()
    line = voice.wait_for_log(lambda entry: entry.get("event") == "request" and entry.get("transport") == "wyoming")
    assert line["priority"] == "interactive" and line["outcome"] == "ok" and line["output_tokens"] <= 48
    assert QUESTION not in voice.log_text()  # never prompt text in the logs


def test_a_voice_client_that_hangs_up_cancels_its_generation(voice):
    before = len([entry for entry in voice.request_logs() if entry.get("transport") == "wyoming"])

    async def main():
        client = AsyncClient.from_uri(voice.uri)
        await client.connect()
        await client.write_event(Transcript(text="Write a long story about a dragon.").event())
        await until(client, "handled-chunk")
        await client.disconnect()

    run(main())
    line = voice.wait_for_log(lambda entry: entry.get("event") == "request" and entry.get("transport") == "wyoming"
                              and len([x for x in voice.request_logs() if x.get("transport") == "wyoming"]) > before
                              and entry.get("outcome") == "cancelled")
    assert line["output_tokens"] < 48
    assert voice.status()["queue"]["running"] == 0


def test_socket_requests_are_unaffected_and_sigterm_removes_the_socket(voice):
    with voice.client() as client:
        events = list(client.ask({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True}))
    assert events[-1]["edged"]["profile"]

    async def busy_check():
        async with AsyncClient.from_uri(voice.uri) as client:
            await client.write_event(Transcript(text="").event())
            return await client.read_event()

    assert NotHandled.from_event(run(busy_check())).text == "the transcript is empty"
    assert voice.stop(signal.SIGTERM) == 0
    assert not (voice.workdir.parent / "wyoming.sock").exists()
