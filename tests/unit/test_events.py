"""The event hub isolates listeners; a raising listener or a dead dispatcher never leaves the core silently stuck."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from edged.config import Config, RequestLimits
from edged.core import Core
from edged.daemon import Daemon
from edged.engines.worker import ModelWorker
from edged.errors import Busy, ConfigError, InternalError
from edged.events import Events
from edged.messages import ErrorEvent, FinalEvent, parse_request
from edged.power.energy import EnergyReport
from edged.summary import RequestSummary
from edged.telemetry.compose import request_record
from tests.fakes import FakeEngine, FixedEnergy, make_profile


def request() -> Any:
    return parse_request(json.dumps({"messages": [{"role": "user", "content": "hi"}], "stream": True}).encode())


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_raising_listener_is_logged_by_name_counted_and_the_rest_still_run() -> None:
    events = Events()
    heard: list[str] = []

    def broken(code: str) -> None:
        raise RuntimeError("listener bug")

    events.request_rejected.connect(broken)
    events.request_rejected.connect(heard.append, name="heard")
    with capture_logs() as logs:
        failed = events.request_rejected.emit("busy")
    assert failed == 1 and heard == ["busy"]
    key = "request_rejected:test_a_raising_listener_is_logged_by_name_counted_and_the_rest_still_run.<locals>.broken"
    assert events.listener_errors == {key: 1}
    failure = next(entry for entry in logs if entry["event"] == "event listener failed")
    assert failure["listener"].endswith("broken") and failure["signal"] == "request_rejected"


def test_an_edged_error_from_a_reload_listener_keeps_the_others_and_logs_no_traceback() -> None:
    events = Events()
    reloaded: list[str] = []

    class AllowList:
        def reload(self) -> None:
            raise ConfigError("clients.toml line 3: bad key")

    events.reload.connect(AllowList().reload)
    events.reload.connect(lambda: reloaded.append("profiles"), name="profiles")
    with capture_logs() as logs:
        assert events.reload.emit() == 1
    assert reloaded == ["profiles"]
    refused = next(entry for entry in logs if entry["event"] == "event listener refused")
    assert refused["listener"] == "test_an_edged_error_from_a_reload_listener_keeps_the_others_and_logs_no_traceback" \
        ".<locals>.AllowList.reload"
    assert "bad key" in refused["error"] and "exc_info" not in refused
    assert events.listeners()["reload"][1] == "profiles"


def test_a_listener_can_be_disconnected() -> None:
    events = Events()
    heard: list[tuple[str, str]] = []
    listener = events.profile_changed.connect(lambda name, reason: heard.append((name, reason)))
    events.profile_changed.emit("eco", "hot")
    events.profile_changed.disconnect(listener)
    events.profile_changed.emit("performance", "cool")
    assert heard == [("eco", "hot")]


class SwitchingEnergy(FixedEnergy):
    """Energy measured by two sensors in one request, named as the meter names it."""

    def end(self, handle: float) -> EnergyReport:
        return EnergyReport(2.0, "ina219+rapl", 0.5, scope="mixed")


def test_core_keeps_serving_when_every_listener_raises() -> None:
    async def main() -> tuple[list[Any], list[Any], Core]:
        events = Events()

        def raising(*args: Any) -> None:
            raise RuntimeError("observer bug")

        for signal in (events.request_finished, events.request_rejected, events.profile_changed):
            signal.connect(raising)
        core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(priorities=("normal",)), RequestLimits(),
                    FixedEnergy(), events)
        await core.start()
        first = [e async for e in core.submit(request(), transport="t", peer="p").stream()]
        with pytest.raises(Busy):
            core.submit(parse_request(b'{"prompt": "x", "priority": "background"}'), transport="t", peer="p")
        core.set_profile(make_profile("other"), reason="test")
        second = [e async for e in core.submit(request(), transport="t", peer="p").stream()]
        alive = core.alive and not core._dispatcher.done()  # type: ignore[union-attr]
        await core.stop()
        assert alive
        return first, second, core

    first, second, core = run(main())
    assert isinstance(first[-1], FinalEvent) and isinstance(second[-1], FinalEvent)
    assert core.status()["requests"]["ok"] == 2
    assert sum(core.events.listener_errors.values()) == 4  # two finished, one rejected, one profile change


def test_telemetry_listener_on_a_two_sensor_request_builds_its_record() -> None:
    """The review's trigger: a `+`-joined energy source reached a record that refused it, inside the core."""

    async def main() -> tuple[list[RequestSummary], Core]:
        events = Events()
        seen: list[RequestSummary] = []
        events.request_finished.connect(seen.append)
        events.request_finished.connect(lambda s: request_record(s, device_id="pi-7", time_unix_ms=1),
                                        name="telemetry")
        core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(), RequestLimits(), SwitchingEnergy(), events)
        await core.start()
        for _ in range(2):
            final = [e async for e in core.submit(request(), transport="t", peer="p").stream()][-1]
            assert isinstance(final, FinalEvent) and final.summary.energy_source == "ina219+rapl"
        await core.stop()
        return seen, core

    seen, core = run(main())
    assert len(seen) == 2 and core.events.listener_errors == {}
    record = request_record(seen[0], device_id="pi-7", time_unix_ms=1)
    assert (record.energy_source, record.energy_scope) == ("ina219+rapl", "mixed")


async def _dead_core() -> Core:
    core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(), RequestLimits(), FixedEnergy())

    async def broken() -> None:
        raise RuntimeError("dispatcher bug")

    core._apply_engine_settings = broken  # type: ignore[method-assign]
    await core.start()
    await asyncio.gather(core._dispatcher, return_exceptions=True)  # type: ignore[arg-type]
    return core


def test_a_dead_dispatcher_refuses_requests_instead_of_letting_them_time_out() -> None:
    async def main() -> Core:
        core = await _dead_core()
        with pytest.raises(InternalError, match="restarting"):
            core.submit(request(), transport="t", peer="p")
        await core.stop()
        return core

    core = run(main())
    assert not core.alive and "dispatcher bug" in repr(core.failure)
    assert core.status()["requests"] == {"rejected_internal": 1}


def test_requests_queued_when_the_dispatcher_dies_are_answered_at_once() -> None:
    async def main() -> list[Any]:
        core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(), RequestLimits(), FixedEnergy())
        queued = asyncio.Event()

        async def broken() -> None:
            await queued.wait()
            raise RuntimeError("dispatcher bug")

        core._apply_engine_settings = broken  # type: ignore[method-assign]
        await core.start()
        job = core.submit(request(), transport="t", peer="p")
        queued.set()
        events = [e async for e in job.stream()]
        await core.stop()
        return events

    (event,) = run(main())
    assert isinstance(event, ErrorEvent) and event.code == "internal" and "restarting" in event.message


def test_the_watchdog_is_not_fed_and_the_daemon_stops_when_the_dispatcher_died(tmp_path: Any) -> None:
    async def main() -> tuple[bool, bool, int]:
        daemon = Daemon(Config.model_validate({"state_dir": str(tmp_path)}))
        core = await _dead_core()
        daemon.core, daemon.worker = core, core._worker
        healthy = daemon.healthy(time.monotonic())
        await core.stop()
        return healthy, daemon._stop.is_set(), daemon.exit_code

    assert run(main()) == (False, True, 1)


def test_a_healthy_core_feeds_the_watchdog(tmp_path: Any) -> None:
    async def main() -> bool:
        daemon = Daemon(Config.model_validate({"state_dir": str(tmp_path)}))
        core = Core(ModelWorker(FakeEngine(tokens=1)), make_profile(), RequestLimits(), FixedEnergy())
        await core.start()
        daemon.core, daemon.worker = core, core._worker
        healthy = daemon.healthy(time.monotonic())
        await core.stop()
        return healthy and not daemon._stop.is_set()

    assert run(main())


def test_errors_after_generation_carry_tokens_but_no_measured_figures() -> None:
    async def main() -> list[RequestSummary]:
        events = Events()
        seen: list[RequestSummary] = []
        events.request_finished.connect(seen.append)
        core = Core(ModelWorker(FakeEngine(tokens=2)), make_profile(), RequestLimits(), FixedEnergy(), events)
        await core.start()
        job = core.submit(request(), transport="t", peer="p")
        job.cancel("client disconnected")
        assert isinstance([e async for e in job.stream()][-1], ErrorEvent)
        await core.stop()
        return seen

    (summary,) = run(main())
    assert summary.outcome == "cancelled" and summary.queue_time_ms is None and summary.energy_j is None
    assert summary.duration_ms is not None and summary.duration_ms >= 0
