"""The core with a fake engine: priority order, busy, deadlines, cancellation, idle unload, profile changes."""

import asyncio

import pytest

from edged.config import RequestLimits
from edged.core import Core
from edged.engines.worker import ModelWorker
from edged.errors import BadRequest, Busy
from edged.messages import ErrorEvent, FinalEvent, TokenEvent, parse_request
from tests.fakes import FakeEngine, FixedEnergy, make_profile


def request(priority="normal", **extra):
    import json
    return parse_request(json.dumps({"messages": [{"role": "user", "content": "hi"}], "priority": priority,
                                     "stream": True, **extra}).encode())


async def collect(job):
    return [event async for event in job.stream()]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def make_core(engine, profile=None, limits=None):
    core = Core(ModelWorker(engine), profile or make_profile(), limits or RequestLimits(), FixedEnergy())
    await core.start()
    return core


def test_answers_with_tokens_and_final_stats():
    async def main():
        core = await make_core(FakeEngine(tokens=3))
        events = await collect(core.submit(request(), transport="test", peer="p"))
        await core.stop()
        return events

    events = run(main())
    assert [e.text for e in events if isinstance(e, TokenEvent)] == ["t0 ", "t1 ", "t2 "]
    final = events[-1]
    assert isinstance(final, FinalEvent) and final.usage.completion_tokens == 3
    assert final.stats.energy_j == 1.5 and final.stats.energy_source == "test-meter"
    assert final.stats.profile == "test"


def test_priority_order_and_busy():
    async def main():
        engine = FakeEngine(tokens=1)
        engine.gate.clear()  # hold the first request in the model so the rest queue up
        core = await make_core(engine, make_profile(queue_length=3))
        first = core.submit(request(), transport="t", peer="p")
        await asyncio.sleep(0.05)
        order = []
        jobs = [core.submit(request(p), transport="t", peer=p) for p in ("background", "normal", "interactive")]
        with pytest.raises(Busy, match="queue full"):
            core.submit(request(), transport="t", peer="p")

        async def watch(job):
            await collect(job)
            order.append(job.request.priority)

        watchers = [asyncio.create_task(watch(j)) for j in jobs]
        engine.gate.set()
        await collect(first)
        await asyncio.gather(*watchers)
        await core.stop()
        return order, core.counts

    order, counts = run(main())
    assert order == ["interactive", "normal", "background"]
    assert counts["rejected_busy"] == 1 and counts["ok"] == 4


def test_priority_not_admitted_by_profile():
    async def main():
        core = await make_core(FakeEngine(), make_profile(priorities=("interactive",)))
        with pytest.raises(Busy, match="admits only interactive"):
            core.submit(request("background"), transport="t", peer="p")
        await core.stop()

    run(main())


def test_prompt_too_long():
    async def main():
        core = await make_core(FakeEngine(), limits=RequestLimits(max_prompt_chars=16))
        with pytest.raises(BadRequest, match="longer than"):
            core.submit(parse_request(b'{"prompt": "xxxxxxxxxxxxxxxxx"}'), transport="t", peer="p")
        await core.stop()

    run(main())


def test_cancel_stops_within_one_token():
    async def main():
        engine = FakeEngine(tokens=1000, delay_s=0.002)
        core = await make_core(engine, make_profile(max_tokens=1000))
        job = core.submit(request(max_tokens=1000), transport="t", peer="p")
        seen = 0
        async for event in job.stream():
            seen += 1
            if seen == 3:
                job.cancel("client disconnected")
            if isinstance(event, (FinalEvent, ErrorEvent)):
                final = event
                break
        await core.stop()
        return engine.generated_per_call, final

    generated, final = run(main())
    assert isinstance(final, ErrorEvent) and final.code == "cancelled"
    assert generated[0] < 20  # tokens already in flight when the flag was set, never the remaining ~1000


def test_deadline_while_running_and_queued():
    async def main():
        engine = FakeEngine(tokens=1000, delay_s=0.005)
        core = await make_core(engine, make_profile(max_tokens=1000))
        running = core.submit(request(max_tokens=1000, deadline_ms=200), transport="t", peer="p")
        queued = core.submit(request(deadline_ms=100), transport="t", peer="p")
        results = await asyncio.gather(collect(running), collect(queued))
        await core.stop()
        return results

    running, queued = run(main())
    assert isinstance(running[-1], ErrorEvent) and running[-1].code == "deadline_exceeded"
    assert queued == [ErrorEvent("deadline_exceeded", "deadline passed while queued")]


def test_idle_unload_and_reload_on_demand():
    async def main():
        engine = FakeEngine(tokens=2)
        core = await make_core(engine, make_profile(unload_after_s=0.1))
        await collect(core.submit(request(), transport="t", peer="p"))
        for _ in range(100):
            if engine.unloads:
                break
            await asyncio.sleep(0.02)
        unloaded, released = engine.unloads, engine.idle_releases
        events = await collect(core.submit(request(), transport="t", peer="p"))
        await core.stop()
        return unloaded, released, engine.loads, events

    unloaded, released, loads, events = run(main())
    assert released == 1  # the engine decides what an idle model gives back (GGUF keeps mapped weights)
    assert unloaded == 1 and loads == 2 and isinstance(events[-1], FinalEvent)


def test_profile_change_reloads_between_requests():
    async def main():
        engine = FakeEngine(tokens=2)
        core = await make_core(engine, make_profile())
        core.set_profile(make_profile(name="other").model_copy(
            update={"engine": make_profile().engine.model_copy(update={"threads": 2})}), "test")
        events = await collect(core.submit(request(), transport="t", peer="p"))
        await core.stop()
        return engine.loads, events

    loads, events = run(main())
    assert loads == 2 and events[-1].stats.profile == "other"


def test_drain_cancels_what_does_not_finish():
    async def main():
        engine = FakeEngine(tokens=10_000, delay_s=0.001)
        core = await make_core(engine, make_profile(max_tokens=10_000))
        job = core.submit(request(max_tokens=10_000), transport="t", peer="p")
        queued = core.submit(request(), transport="t", peer="p")
        await asyncio.sleep(0.05)
        cancelled = await core.drain(0.1)
        events = await collect(job)
        await core.stop()
        return cancelled, events, await collect(queued)

    cancelled, events, queued = run(main())
    assert cancelled == 2
    assert events[-1].code == "cancelled" and queued[-1].code == "cancelled"


def test_swap_waits_for_the_running_request_and_queued_ones_use_the_new_model():
    async def main():
        old, new = FakeEngine(tokens=3, delay_s=0.01), FakeEngine(tokens=2)
        core = await make_core(old)
        running = core.submit(request(), transport="t", peer="p")
        await asyncio.sleep(0.005)
        swap = asyncio.create_task(core.swap_engine(new))
        queued = core.submit(request(), transport="t", peer="p")
        first, second = await collect(running), await collect(queued)
        info = await swap
        await core.stop()
        return first, second, info, old, new

    first, second, info, old, new = run(main())
    assert first[-1].usage.completion_tokens == 3 and old.unloads == 1  # finished on the old model
    assert second[-1].usage.completion_tokens == 2 and new.loads == 1  # ran on the new one
    assert info.name == "fake"


def test_per_client_rate_from_the_profile():
    async def main():
        core = await make_core(FakeEngine(tokens=1), make_profile(requests_per_minute=2))
        jobs = [core.submit(request(), transport="t", peer="p", client="alice") for _ in range(2)]
        with pytest.raises(Busy, match="requests/minute"):
            core.submit(request(), transport="t", peer="p", client="alice")
        jobs.append(core.submit(request(), transport="t", peer="p", client="bob"))  # another client is not limited
        for job in jobs:
            await collect(job)
        await core.stop()

    run(main())


def test_deadline_while_waiting_for_a_model_swap():
    async def main():
        slow_load = FakeEngine(tokens=1)
        core = await make_core(FakeEngine(tokens=1))
        original_load = slow_load.load

        def load_slowly(settings):
            import time as _time
            _time.sleep(0.3)  # the swap holds the model lock while the new model loads
            return original_load(settings)

        slow_load.load = load_slowly
        swap = asyncio.create_task(core.swap_engine(slow_load))
        await asyncio.sleep(0.01)
        job = core.submit(request(deadline_ms=50), transport="t", peer="p")
        events = await collect(job)
        await swap
        await core.stop()
        return events, slow_load.loads

    events, loads = run(main())
    assert events[-1].code == "deadline_exceeded"
    assert loads == 1  # the dispatcher waited for the swap instead of loading the new engine a second time
