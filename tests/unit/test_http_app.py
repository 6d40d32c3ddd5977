"""The HTTP transport in-process: a real Core with a fake engine, the real server, aiohttp as the client."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edged.config import RequestLimits
from edged.core import Core
from edged.crypto.api_keys import ApiKeyStore, add_key, revoke_key
from edged.engines.worker import ModelWorker
from edged.errors import ConfigError, EngineError
from edged.events import Events
from edged.prometheus import DeviceGauges, PrometheusMetrics
from edged.transports.http.app import HttpTransport
from edged.transports.http.settings import HttpSettings, bind_listeners, check_listen
from tests.fakes import FakeEngine, FixedEnergy, make_profile

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatedEngine(FakeEngine):
    """Each token waits for a permit, so a test knows exactly how many were produced."""

    def __init__(self, tokens: int = 100) -> None:
        super().__init__(tokens=tokens)
        self.permits = threading.Semaphore(0)

    def generate(self, messages, prompt, params, sink):  # type: ignore[no-untyped-def]
        def gated(text: str) -> bool:
            self.permits.acquire()
            return sink(text)
        return super().generate(messages, prompt, params, gated)


class BrokenEngine(FakeEngine):
    def load(self, settings):  # type: ignore[no-untyped-def]
        raise EngineError("no such model file")


class Served:
    def __init__(self, tmp_path: Path, core: Core, transport: HttpTransport, metrics: PrometheusMetrics) -> None:
        self.tmp_path, self.core, self.transport, self.metrics = tmp_path, core, transport, metrics
        self.session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(transport.settings.socket_path)))
        self.tcp = aiohttp.ClientSession()
        listen = transport.settings.listen
        self.tcp_base = f"http://{listen}" if listen else ""

    async def close(self) -> None:
        await self.session.close()
        await self.tcp.close()
        await self.transport.stop_listening()
        await self.core.drain(1)
        await self.transport.close()
        await self.core.stop()


async def serve(tmp_path: Path, engine: FakeEngine | None = None, *, uids: set[int] | None = None,
                listen: str | None = None, max_body: int = 64 * 1024, **profile: Any) -> Served:
    events = Events()
    metrics = PrometheusMetrics()
    events.request_finished.connect(metrics.on_request)
    events.request_rejected.connect(metrics.on_reject)
    core = Core(ModelWorker(engine or FakeEngine(tokens=3)), make_profile(**profile), RequestLimits(), FixedEnergy(),
                events)
    await core.start()
    settings = HttpSettings(socket_path=tmp_path / "http.sock", mode=0o600, max_body_bytes=max_body,
                            plaintext_uids={os.getuid()} if uids is None else uids, plaintext_gids=set(),
                            keys_path=tmp_path / "api-keys.json", listen=listen)
    gauges = DeviceGauges(version="t", device_id="d", model_name="fake", model_format="fake", model_state="ready",
                          profile="test", profiles=("test",), queue_waiting=0, queue_running=0, queue_capacity=8)
    transport = HttpTransport(settings, core.submit, lambda: "fake", lambda: (200, {"status": "ready"}),
                              lambda: metrics.render(gauges), ApiKeyStore(settings.keys_path))
    await transport.start(bind_listeners(settings))
    return Served(tmp_path, core, transport, metrics)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def sse_events(text: str) -> list[Any]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_chat_json_stream_and_completions(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path)
        try:
            async with s.session.post("http://edged/v1/chat/completions", json=CHAT) as r:
                assert r.status == 200
                answer = await r.json()
            assert answer["object"] == "chat.completion"
            assert answer["choices"][0]["message"] == {"role": "assistant", "content": "t0 t1 t2 "}
            assert answer["usage"]["completion_tokens"] == 3 and answer["edged"]["energy_source"] == "test-meter"

            async with s.session.post("http://edged/v1/chat/completions", json={**CHAT, "stream": True,
                                                                                "priority": "interactive"}) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
                events = sse_events(await r.text())
            assert events[-1] == "[DONE]"
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
            assert text == "t0 t1 t2 "
            assert events[-2]["choices"][0]["finish_reason"] == "length" and "edged" in events[-2]

            async with s.session.post("http://edged/v1/completions", json={"prompt": "once", "max_tokens": 2}) as r:
                done = await r.json()
            assert done["object"] == "text_completion" and done["choices"][0]["text"] == "t0 t1 "
            async with s.session.post("http://edged/v1/completions",
                                      json={"prompt": "once", "max_tokens": 2, "stream": True}) as r:
                events = sse_events(await r.text())
            assert "".join(e["choices"][0]["text"] for e in events[:-1]) == "t0 t1 "  # queued tokens coalesce
            assert events[-2]["choices"][0]["finish_reason"] == "length" and events[-1] == "[DONE]"
            async with s.session.get("http://edged/v1/models") as r:
                assert (await r.json())["data"][0]["id"] == "fake"
        finally:
            await s.close()

    run(main())


def test_errors_have_openai_shape_and_fitting_status(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path, max_body=2048)
        try:
            cases = [
                ("POST", "/v1/chat/completions", b"{not json", 400, "bad_request"),
                ("POST", "/v1/chat/completions", json.dumps({**CHAT, "frequency": 1}).encode(), 400, "bad_request"),
                ("POST", "/v1/chat/completions", json.dumps({**CHAT, "n": 2}).encode(), 400, "bad_request"),
                ("POST", "/v1/completions", json.dumps(CHAT).encode(), 400, "bad_request"),
                # The frame socket's parser sees the body: its structured-output and tool checks apply as-is.
                ("POST", "/v1/chat/completions", json.dumps({**CHAT, "tools": "none"}).encode(), 400, "bad_request"),
                ("POST", "/v1/chat/completions", json.dumps({**CHAT, "response_format": {"type": "yaml"}}).encode(),
                 400, "bad_request"),
                ("GET", "/v2/anything", b"", 404, "not_found"),
                ("GET", "/v1/models/other-model", b"", 404, "not_found"),
                ("GET", "/v1/chat/completions", b"", 405, "method_not_allowed"),
                ("POST", "/v1/chat/completions", b'{"prompt": "' + b"x" * 4096 + b'"}', 413, "too_large"),
            ]
            for method, path, body, status, code in cases:
                async with s.session.request(method, "http://edged" + path, data=body) as r:
                    error = (await r.json())["error"]
                    assert (r.status, error["code"]) == (status, code), (path, body[:40], error)
                    assert error["type"] and error["message"]
            # The tolerated OpenAI extras pass.
            async with s.session.post("http://edged/v1/chat/completions",
                                      json={**CHAT, "n": 1, "user": "u", "stream_options": {"include_usage": True}}) as r:
                assert r.status == 200
        finally:
            await s.close()

    run(main())


def test_busy_is_429_with_retry_after_and_deadline_is_504(tmp_path: Path) -> None:
    async def main() -> None:
        engine = FakeEngine(tokens=1)
        engine.gate.clear()  # the first request holds the model; the queue (1) fills behind it
        s = await serve(tmp_path, engine, queue_length=1)
        try:
            first = asyncio.create_task(s.session.post("http://edged/v1/chat/completions", json=CHAT))
            while s.core.status()["queue"]["running"] == 0:
                await asyncio.sleep(0.01)
            queued = asyncio.create_task(s.session.post("http://edged/v1/chat/completions",
                                                        json={**CHAT, "deadline_ms": 50, "stream": True}))
            while s.core.status()["queue"]["waiting"] == 0:
                await asyncio.sleep(0.01)
            async with s.session.post("http://edged/v1/chat/completions", json=CHAT) as r:
                assert r.status == 429 and r.headers["Retry-After"] == "1"
                assert (await r.json())["error"]["type"] == "rate_limit_error"
            late = await queued
            assert late.status == 504 and (await late.json())["error"]["code"] == "deadline_exceeded"
            engine.gate.set()
            assert (await first).status == 200
            async with s.session.get("http://edged/metrics") as r:
                page = await r.text()
            assert 'edged_requests_rejected_total{code="busy"} 1' in page
            assert 'edged_requests_total{transport="http",outcome="deadline_exceeded"} 1' in page
        finally:
            await s.close()

    run(main())


def test_no_model_is_503(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path, BrokenEngine())
        try:
            async with s.session.post("http://edged/v1/chat/completions", json={**CHAT, "stream": True}) as r:
                assert r.status == 503
                assert (await r.json())["error"] == {"message": "no such model file", "type": "server_error",
                                                     "code": "model_unavailable", "param": None}
        finally:
            await s.close()

    run(main())


def test_unix_peer_rule_guards_requests_but_not_health(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path, uids=set())
        try:
            async with s.session.post("http://edged/v1/chat/completions", json=CHAT) as r:
                assert r.status == 403 and "plaintext_uids" in (await r.json())["error"]["message"]
            async with s.session.get("http://edged/health") as r:
                assert r.status == 200
            assert oct((tmp_path / "http.sock").stat().st_mode & 0o777) == "0o600"
        finally:
            await s.close()

    run(main())


def test_tcp_needs_a_current_api_key(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path, listen=f"127.0.0.1:{free_port()}")
        url = s.tcp_base + "/v1/chat/completions"
        try:
            async with s.tcp.post(url, json=CHAT) as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["error"]["type"] == "authentication_error"
            async with s.tcp.get(s.tcp_base + "/metrics", headers={"Authorization": "Bearer edk_wrong"}) as r:
                assert r.status == 401
            key = add_key(tmp_path / "api-keys.json", "ha")
            s.transport.reload_keys()  # what SIGHUP does; the poll would find it within seconds too
            headers = {"Authorization": f"Bearer {key}"}
            async with s.tcp.post(url, json=CHAT, headers=headers) as r:
                assert r.status == 200 and (await r.json())["usage"]["completion_tokens"] == 3
            revoke_key(tmp_path / "api-keys.json", "ha")
            s.transport.reload_keys()
            async with s.tcp.post(url, json=CHAT, headers=headers) as r:
                assert r.status == 401
        finally:
            await s.close()

    run(main())


def test_key_file_change_is_picked_up_without_sighup(tmp_path: Path) -> None:
    async def main() -> None:
        s = await serve(tmp_path, listen=f"127.0.0.1:{free_port()}")
        try:
            key = add_key(tmp_path / "api-keys.json", "later")
            for _ in range(200):  # the poll runs every KEY_CHECK_S
                if s.transport.keys.check(key) == "later":
                    break
                await asyncio.sleep(0.05)
            async with s.tcp.get(s.tcp_base + "/health", headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200
        finally:
            await s.close()

    run(main())


def test_disconnect_mid_stream_cancels_within_one_token(tmp_path: Path) -> None:
    async def main() -> None:
        engine = GatedEngine(tokens=100)
        s = await serve(tmp_path, engine, max_tokens=100)
        try:
            engine.permits.release()  # the response starts with the first token
            response = await s.session.post("http://edged/v1/chat/completions",
                                            json={**CHAT, "max_tokens": 100, "stream": True})
            for second in (False, True):  # one token at a time, so each arrives as its own chunk
                if second:
                    engine.permits.release()
                while not (await response.content.readline()).startswith(b"data: "):
                    pass
            response.close()  # hang up with the request in flight
            while s.core.status()["queue"]["running"] and not s.core._running.cancel_flag.is_set():  # noqa: SLF001
                await asyncio.sleep(0.01)
            engine.permits.release(100)
            while not engine.generated_per_call:
                await asyncio.sleep(0.01)
            # Two tokens went out; the third was produced, refused by the sink, and generation stopped.
            assert engine.generated_per_call == [3]
            async with s.session.get("http://edged/metrics") as r:
                assert 'edged_requests_total{transport="http",outcome="cancelled"} 1' in await r.text()
        finally:
            engine.permits.release(1000)  # never leave the model thread waiting, or the core cannot stop
            await s.close()

    run(main())


def test_non_loopback_listen_needs_tls(tmp_path: Path) -> None:
    base = dict(socket_path=tmp_path / "s", mode=0o600, max_body_bytes=1024, plaintext_uids=set(),
                plaintext_gids=set(), keys_path=tmp_path / "k")
    for listen in ("0.0.0.0:8080", "[::]:8080", "192.168.1.5:80", "edge.example:8080"):
        with pytest.raises(ConfigError, match="tls_cert"):
            check_listen(HttpSettings(**base, listen=listen))
    for listen in ("127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.0.0.9:1"):
        check_listen(HttpSettings(**base, listen=listen))
    check_listen(HttpSettings(**base, listen="0.0.0.0:8443", tls_cert=tmp_path / "c", tls_key=tmp_path / "k"))


def test_a_client_that_connects_before_the_server_takes_over_is_served(tmp_path: Path) -> None:
    async def main() -> None:
        core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(), RequestLimits(), FixedEnergy(), Events())
        await core.start()
        settings = HttpSettings(socket_path=tmp_path / "http.sock", mode=0o600, max_body_bytes=4096,
                                plaintext_uids={os.getuid()}, plaintext_gids=set(), keys_path=tmp_path / "k")
        listeners = bind_listeners(settings)  # what the daemon does at start, before the HTTP code is imported
        session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(settings.socket_path)))
        early = asyncio.create_task(session.get("http://edged/health"))
        await asyncio.sleep(0)
        transport = HttpTransport(settings, core.submit, lambda: "fake", lambda: (200, {"status": "ready"}),
                                  lambda: "", ApiKeyStore(settings.keys_path))
        await transport.start(listeners)
        try:
            response = await early
            assert response.status == 200 and (await response.json()) == {"status": "ready"}
        finally:
            await session.close()
            await transport.stop_listening()
            await transport.close()
            await core.stop()

    run(main())
