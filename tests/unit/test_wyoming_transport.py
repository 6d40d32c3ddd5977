"""The Wyoming handle server on a real socket with the wyoming package's own client; the core runs a fake engine."""

import asyncio
import json
import socket
import threading
from pathlib import Path

import pytest
from wyoming.asr import Transcript
from wyoming.client import AsyncClient
from wyoming.error import Error
from wyoming.event import read_event
from wyoming.handle import Handled, HandledChunk, HandledStart, NotHandled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong

from edged.config import WyomingConfig, load_config
from edged.core import Core
from edged.events import Events
from edged.engines.base import GenerationResult
from edged.engines.worker import ModelWorker
from edged.errors import ConfigError, EngineError, TransportError
from edged.transports.wyoming import WyomingTransport
from edged.transports.wyoming_uri import parse_wyoming_uri
from edged.transports.wyoming_wire import MAX_DATA_BYTES, ModelFacts
from tests.fakes import FakeEngine, FixedEnergy, make_profile
from edged.config import RequestLimits

MODEL = ModelFacts(name="fake-model", description="a fake", version="7", author="tests", url="https://example.org")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class Server:
    def __init__(self, tmp_path: Path, engine: FakeEngine, profile=None, **settings) -> None:
        self.uri = f"unix://{tmp_path}/wyoming.sock"
        self.settings = WyomingConfig.model_validate({"uri": self.uri, **settings})
        self.engine = engine
        self.profile = profile or make_profile()
        self.summaries = []

    async def __aenter__(self):
        events = Events()
        events.request_finished.connect(self.summaries.append, name="test")
        self.core = Core(ModelWorker(self.engine), self.profile, RequestLimits(), FixedEnergy(), events)
        await self.core.start()
        self.transport = WyomingTransport(self.settings, self.core, lambda: MODEL)
        await self.transport.start()
        return self

    async def __aexit__(self, *exc):
        await self.transport.close()
        await self.core.stop()


async def events_until(client, last_type: str):
    events = []
    while True:
        event = await client.read_event()
        assert event is not None, f"connection closed before {last_type}; got {[e.type for e in events]}"
        events.append(event)
        if event.type == last_type:
            return events


def test_describe_answers_with_a_handle_program(tmp_path):
    async def main():
        async with Server(tmp_path, FakeEngine(), languages=["en", "de"]) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Describe().event())
                return Info.from_event(await client.read_event())

    info = run(main())
    (program,) = info.handle
    assert program.name == "edged" and program.installed and program.supports_handled_streaming
    (model,) = program.models
    assert (model.name, model.version, model.languages) == ("fake-model", "7", ["en", "de"])
    assert model.attribution.name == "tests" and model.description == "a fake"


def test_transcript_streams_chunks_then_the_whole_answer(tmp_path):
    async def main():
        async with Server(tmp_path, FakeEngine(tokens=4)) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="turn on the light", context={"conversation_id": "c1"},
                                                    language="en").event())
                events = await events_until(client, "handled-stop")
            return events, server.summaries

    events, summaries = run(main())
    types = [e.type for e in events]
    assert types[0] == "handled-start" and types[-2:] == ["handled", "handled-stop"]
    chunks = [HandledChunk.from_event(e).text for e in events if HandledChunk.is_type(e.type)]
    assert chunks and "".join(chunks) == "t0 t1 t2 t3 "
    handled = Handled.from_event(events[-2])
    assert handled.text == "t0 t1 t2 t3" and handled.context == {"conversation_id": "c1"}
    assert HandledStart.from_event(events[0]).context == {"conversation_id": "c1"}
    (summary,) = summaries
    assert (summary.transport, summary.priority, summary.outcome) == ("wyoming", "interactive", "ok")
    assert summary.peer.startswith("uid=")


def test_without_streaming_only_the_final_handled_is_sent(tmp_path):
    async def main():
        async with Server(tmp_path, FakeEngine(tokens=3), streaming=False) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Describe().event())
                info = Info.from_event(await client.read_event())
                await client.write_event(Transcript(text="hello").event())
                first = await client.read_event()
                await client.write_event(Ping(text="x").event())
                pong = await client.read_event()
            return info, first, pong

    info, first, pong = run(main())
    assert not info.handle[0].supports_handled_streaming
    assert Handled.is_type(first.type) and Handled.from_event(first).text == "t0 t1 t2"
    assert Pong.is_type(pong.type) and Pong.from_event(pong).text == "x"


def test_system_prompt_and_max_tokens_reach_the_model(tmp_path):
    seen = {}

    class Recording(FakeEngine):
        def generate(self, messages, prompt, params, sink):
            seen["messages"], seen["max_tokens"] = messages, params.max_tokens
            return super().generate(messages, prompt, params, sink)

    async def main():
        async with Server(tmp_path, Recording(tokens=10), system_prompt="Be brief.", max_tokens=2) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="  what time is it  ").event())
                return await events_until(client, "handled-stop")

    events = run(main())
    assert [(m.role, m.content) for m in seen["messages"]] == [("system", "Be brief."), ("user", "what time is it")]
    assert seen["max_tokens"] == 2 and Handled.from_event(events[-2]).text == "t0 t1"


def test_busy_and_refused_requests_become_not_handled_with_the_reason(tmp_path):
    async def main():
        profile = make_profile(priorities=("normal", "background"))
        async with Server(tmp_path, FakeEngine(), profile=profile) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="hi", context={"k": 1}).event())
                refused = await client.read_event()
                await client.write_event(Transcript(text="   ").event())
                empty = await client.read_event()
            return refused, empty

    refused, empty = run(main())
    assert NotHandled.is_type(refused.type) and "admits only normal, background" in NotHandled.from_event(refused).text
    assert NotHandled.from_event(refused).context == {"k": 1}
    assert NotHandled.is_type(empty.type) and "empty" in NotHandled.from_event(empty).text


def test_a_stopping_daemon_refuses_with_not_handled(tmp_path):
    async def main():
        async with Server(tmp_path, FakeEngine(tokens=3)) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await server.core.drain(0)  # the core stops accepting: the next transcript is refused
                await client.write_event(Transcript(text="hi").event())
                return await client.read_event()

    event = run(main())
    assert NotHandled.is_type(event.type) and "stopping" in NotHandled.from_event(event).text


def test_a_failure_after_start_ends_the_stream_with_not_handled(tmp_path):
    class Failing(FakeEngine):
        def generate(self, messages, prompt, params, sink):
            sink("partial ")
            raise EngineError("the model ran out of memory")

    async def main():
        async with Server(tmp_path, Failing()) as server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="hi").event())
                return await events_until(client, "handled-stop")

    events = run(main())
    assert [e.type for e in events] == ["handled-start", "handled-chunk", "not-handled", "handled-stop"]
    assert "out of memory" in NotHandled.from_event(events[2]).text


class Stepped(FakeEngine):
    """The first token at once, the rest only after `release`: what happens at the next token is exact."""

    def __init__(self) -> None:
        super().__init__(tokens=10_000)
        self.release = threading.Event()

    def generate(self, messages, prompt, params, sink):
        count = 0
        for i in range(params.max_tokens):
            if i == 1:
                self.release.wait(10)
            count += 1
            if not sink(f"t{i} "):
                break
        self.generated_per_call.append(count)
        return GenerationResult("cancelled", 3, count, 0, 0.001, 0.01)


def test_disconnect_cancels_the_generation_at_the_next_token(tmp_path):
    async def main():
        engine = Stepped()
        async with Server(tmp_path, engine, max_tokens=4096, profile=make_profile(max_tokens=4096)) as server:
            jobs, submit = [], server.core.submit
            server.core.submit = lambda *a, **k: jobs.append(submit(*a, **k)) or jobs[-1]
            client = AsyncClient.from_uri(server.uri)
            await client.connect()
            await client.write_event(Transcript(text="count to ten thousand").event())
            await events_until(client, "handled-chunk")
            await client.disconnect()
            for _ in range(1000):  # bounded: the hang-up reaches the job while the model waits for its next token
                if jobs[0].cancel_flag.is_set():
                    break
                await asyncio.sleep(0.01)
            cancelled_before_next_token = jobs[0].cancel_flag.is_set()
            engine.release.set()
            while not server.summaries:
                await asyncio.sleep(0.01)
            return cancelled_before_next_token, server.summaries[0], engine.generated_per_call

    cancelled_before_next_token, summary, generated = run(main())
    assert cancelled_before_next_token and summary.outcome == "cancelled"
    assert generated == [2]  # the token sent, and the next one refused: it stopped within one token


def test_hostile_framing_gets_an_error_and_the_server_keeps_serving(tmp_path):
    def raw(path: str, data: bytes) -> list[dict]:
        """Send bytes as they are, half-close, and parse what comes back with wyoming's own reader."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            events = []
            with sock.makefile("rb") as stream:
                while (event := read_event(stream)) is not None:
                    events.append({"type": event.type, "data": event.data})
        return events

    async def main():
        async with Server(tmp_path, FakeEngine(tokens=1)) as server:
            path = str(server.transport.address.path)
            cases = {
                "not json": b"hello\n",
                "oversized data": json.dumps({"type": "transcript", "data_length": MAX_DATA_BYTES + 1}).encode() + b"\n",
                "truncated": json.dumps({"type": "transcript", "data_length": 50}).encode() + b"\n{\"text\"",
                "no type": b'{"data": {}}\n',
                "negative": b'{"type": "x", "payload_length": -1}\n',
                "huge line": b"{" + b" " * 70_000 + b"\n",
                "text not a string": b'{"type": "transcript", "data": {"text": 5}}\n',
                "deep": b'{"type": "x", "data": ' + b"[" * 30_000 + b"]" * 30_000 + b"}\n",
                "5000 digits": b'{"type": "x", "data_length": ' + b"7" * 5000 + b"}\n",
                "deep data": json.dumps({"type": "transcript", "data_length": 60_000}).encode() + b"\n"
                + b"[" * 30_000 + b"]" * 30_000,
            }
            answers = {name: await asyncio.to_thread(raw, path, data) for name, data in cases.items()}
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="still there?").event())
                after = await events_until(client, "handled-stop")
            return answers, after

    answers, after = run(main())
    for name in ("not json", "oversized data", "truncated", "no type", "negative", "huge line", "deep",
                 "5000 digits", "deep data"):
        assert [event["type"] for event in answers[name]] == ["error"], (name, answers[name])
    for name in ("deep", "deep data"):  # was: the connection dropped without an answer
        assert "nested too deeply" in answers[name][0]["data"]["text"]
    assert answers["5000 digits"][0]["data"]["code"] == "bad_request"
    assert "over the 65536-byte limit" in answers["oversized data"][0]["data"]["text"]
    assert answers["huge line"][0]["data"]["code"] == "bad_request"
    assert answers["text not a string"][0]["type"] == "not-handled"
    assert Handled.from_event(after[-2]).text == "t0"


def test_too_many_connections_are_refused_with_busy(tmp_path):
    async def main():
        async with Server(tmp_path, FakeEngine(), max_connections=1) as server:
            async with AsyncClient.from_uri(server.uri) as first:
                await first.write_event(Ping().event())
                await first.read_event()
                async with AsyncClient.from_uri(server.uri) as second:
                    await second.write_event(Transcript(text="hi").event())  # a pipeline asks at once
                    return [await second.read_event() for _ in range(3)]

    error, refusal, end = run(main())
    assert Error.is_type(error.type) and Error.from_event(error).code == "busy"
    assert NotHandled.from_event(refusal).text == "too many voice connections (at most 1); retry later"
    assert end is None  # and the connection is closed


def test_tcp_on_loopback(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def main():
        server = Server(tmp_path, FakeEngine(tokens=2))
        server.uri = f"tcp://127.0.0.1:{port}"
        server.settings = WyomingConfig.model_validate({"uri": server.uri})
        async with server:
            async with AsyncClient.from_uri(server.uri) as client:
                await client.write_event(Transcript(text="hi").event())
                events = await events_until(client, "handled-stop")
            return events, server.summaries[0].peer

    events, peer = run(main())
    assert Handled.from_event(events[-2]).text == "t0 t1" and peer == "tcp:127.0.0.1"


@pytest.mark.parametrize("uri, allow_remote, problem", [
    ("tcp://0.0.0.0:10700", False, "not loopback"),
    ("tcp://192.168.1.5:10700", False, "not loopback"),
    ("tcp://voice.local:10700", False, "not loopback"),
    ("tcp://127.0.0.1", False, "tcp://HOST:PORT"),
    ("unix://run/x.sock", False, "absolute path"),
    ("http://127.0.0.1:1", False, "only unix:// and tcp://"),
    ("tcp://127.0.0.1:0", False, "port 0"),
])
def test_uris_beyond_loopback_or_malformed_are_config_errors(uri, allow_remote, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(overrides={"wyoming": {"uri": uri, "allow_remote": allow_remote}}, environ={})


def test_remote_tcp_only_when_explicitly_allowed():
    config = load_config(overrides={"wyoming": {"uri": "tcp://0.0.0.0:10700", "allow_remote": True}}, environ={})
    assert parse_wyoming_uri(config.wyoming.uri, allow_remote=True).host == "0.0.0.0"
    assert load_config(environ={}).wyoming.uri is None  # unset = off
    assert parse_wyoming_uri("tcp://[::1]:10700", allow_remote=False).port == 10700


def test_a_port_in_use_is_a_clear_start_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def main():
            settings = WyomingConfig.model_validate({"uri": f"tcp://127.0.0.1:{port}"})
            await WyomingTransport(settings, None, lambda: MODEL).start()  # type: ignore[arg-type]

        with pytest.raises(TransportError, match=r"cannot serve Wyoming on tcp://127\.0\.0\.1"):
            run(main())
