"""UpdateService with an install policy: deferred after the download, installs when allowed, survives a restart.

The real core, journal, slots and trust checks with the fake link and depot of test_fleet_update_service;
the local clock is a fake the test moves (the gate reads it each time it looks).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from edged.config import RequestLimits
from edged.core import Core
from edged.engines.base import GenerationResult, SamplingParams, TokenSink
from edged.engines.worker import ModelWorker
from edged.fleet.device.journal import Journal
from edged.fleet.device.service import UpdateService
from edged.fleet.device.slots import Slots, resolve_active_model
from edged.fleet.settings import UpdateSettings
from edged.messages import ChatMessage, ChatRequest
from tests.fakes import FixedEnergy, make_profile
from tests.unit.test_fleet_update_service import (DEVICE, SETTINGS, TOPICS, Control, FakeLink, PathEngine,
                                                  fleet, run, state_reached, stop)

__all__ = ["fleet"]  # the fixture, imported for pytest
WINDOW = SETTINGS.model_copy(update={"install_window": "02:00-05:00"})


class Clock:
    def __init__(self, hhmm: str) -> None:
        self.set(hhmm)

    def set(self, hhmm: str) -> None:
        hours, minutes = (int(part) for part in hhmm.split(":"))
        self.now = datetime(2026, 12, 1, hours, minutes, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class HeldEngine(PathEngine):
    """Answers like PathEngine, but a prompt of "hold" runs until the test lets it go."""

    release = threading.Event()

    def generate(self, messages, prompt, params: SamplingParams, sink: TokenSink) -> GenerationResult:
        if messages and messages[-1].content == "hold":
            sink("…")
            self.release.wait(30)
        return super().generate(messages, prompt, params, sink)


async def started(fleet: Any, settings: UpdateSettings, clock: Clock,
                  profile: Any = None) -> tuple[UpdateService, FakeLink]:
    core = Core(ModelWorker(HeldEngine(fleet.configured)), profile or make_profile(), RequestLimits(), FixedEnergy())
    await core.start()
    link = FakeLink(fleet.models)
    service = UpdateService(settings, fleet.state_dir, DEVICE, TOPICS, core, Control(core, fleet.configured))
    service.engine_factory = HeldEngine
    service.install_gate.clock = clock
    # What mqtt_session wires: the gate looks again when a request ends or the profile changes.
    core.events.request_finished.connect(service.install_gate.recheck)
    core.events.profile_changed.connect(service.install_gate.recheck)
    await service.start(link)  # type: ignore[arg-type]
    return service, link


def is_active(version: int) -> Any:
    return lambda s: s.state == "active" and s.release is not None and s.release.version == version


def test_outside_the_window_the_download_finishes_and_the_install_waits(fleet):
    clock = Clock("01:00")

    async def main():
        service, link = await started(fleet, WINDOW, clock)
        link.offer(fleet.release(1))
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        waiting = (Journal(fleet.state_dir).load().update.step, Slots(fleet.state_dir).read_pointer(),
                   service.core.status()["model"]["path"], [s.state for s in link.states()])
        looks: list[int] = []
        state = service.install_gate._state
        service.install_gate._state = lambda: (looks.append(1), state())[1]
        await asyncio.sleep(0.3)  # deferred: the gate sleeps (no polling), so it does not look at all
        service.install_gate.recheck()  # something woke it, but the window is still shut: no second report
        await asyncio.sleep(0.05)
        assert len(looks) == 1
        reports_while_shut = sum(1 for s in link.states() if s.state == "deferred")
        clock.set("02:00")
        service.install_gate.recheck()  # what SIGHUP does; the timer would wake it at 02:00:00.5 by itself
        await state_reached(link, is_active(1))
        path = service.core.status()["model"]["path"]
        await stop(service)
        return deferred, waiting, reports_while_shut, path

    deferred, (step, pointer, serving, states), reports, path = run(main())
    assert deferred.reason == "install_window" and deferred.label() == "deferred (install_window)"
    assert deferred.detail == "installs after 02:00 local time (window 02:00-05:00)"
    assert deferred.release.version == 1 and deferred.step == "downloaded"
    assert step == "downloaded" and pointer is None and serving == str(fleet.configured)
    assert states.index("verifying") < states.index("deferred") and "installing" not in states
    assert reports == 1
    assert path == str(fleet.state_dir / "models" / "slot-a" / "model-v1.gguf")


def test_the_window_timer_installs_without_any_event(fleet):
    """The clock stands at 01:59:58 until the install is deferred, then runs: only the gate's own timer
    (sleep until the opening) can wake it, as nothing else happens."""
    began = datetime(2026, 12, 1, 1, 59, 58, tzinfo=UTC)
    running_since: list[float] = []

    def clock() -> datetime:
        return began + timedelta(seconds=time.monotonic() - running_since[0]) if running_since else began

    async def main():
        service, link = await started(fleet, WINDOW, Clock("00:00"))
        service.install_gate.clock = clock
        link.offer(fleet.release(1))
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        running_since.append(time.monotonic())
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred, clock()

    deferred, now = run(main())
    assert deferred.reason == "install_window" and now.hour == 2


def test_a_deferral_survives_a_restart_and_nothing_is_downloaded_again(fleet):
    clock = Clock("12:00")
    envelope = fleet.release(1)

    async def first_life():
        service, link = await started(fleet, WINDOW, clock)
        link.offer(envelope)
        await state_reached(link, lambda s: s.state == "deferred")
        await stop(service)

    async def second_life():
        service, link = await started(fleet, WINDOW, clock)
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        pulls = link.pulls()
        clock.set("03:30")
        service.install_gate.recheck()
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred, pulls

    run(first_life())
    assert Journal(fleet.state_dir).load().update.step == "downloaded"
    deferred, pulls = run(second_life())
    assert deferred.reason == "install_window" and deferred.release.version == 1 and pulls == 0
    assert Journal(fleet.state_dir).load().update.step == "committed"


def test_idle_waits_for_the_request_in_flight_and_installs_when_it_ends(fleet):
    settings = SETTINGS.model_copy(update={"install_when": "idle"})
    HeldEngine.release.clear()

    async def main():
        service, link = await started(fleet, settings, Clock("12:00"))
        job = service.core.submit(ChatRequest(messages=[ChatMessage(role="user", content="hold")], max_tokens=4),
                                  transport="test", peer="t")
        while service.core.status()["queue"]["running"] == 0:
            await asyncio.sleep(0.01)
        link.offer(fleet.release(1))
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        still_running = service.core.status()["queue"]["running"]
        HeldEngine.release.set()  # the request ends; request_finished wakes the gate
        answer = [event async for event in job.stream()][-1]
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred, still_running, answer

    deferred, running, answer = run(main())
    assert deferred.reason == "busy" and deferred.detail == "installs when no request is in flight or queued"
    assert running == 1 and answer.text.endswith("OK")  # answered in full by the old model


def test_parked_waits_for_the_parked_profile(fleet):
    settings = SETTINGS.model_copy(update={"install_when": "parked"})
    parked = make_profile("parked")

    async def main():
        service, link = await started(fleet, settings, Clock("12:00"), profile=make_profile("balanced"))
        link.offer(fleet.release(1))
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        service.core.set_profile(parked, reason="ignition off")  # profile_changed wakes the gate
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred

    deferred = run(main())
    assert deferred.reason == "not_parked" and "profile now balanced" in deferred.detail


def test_a_profile_that_forbids_installs_holds_the_release(fleet):
    eco = make_profile("eco")
    eco = eco.model_copy(update={"updates": eco.updates.model_copy(update={"allow_installs": False})})

    async def main():
        service, link = await started(fleet, SETTINGS, Clock("12:00"), profile=eco)
        link.offer(fleet.release(1))
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        service.core.set_profile(make_profile("balanced"), reason="cooled down")
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred

    deferred = run(main())
    assert deferred.reason == "profile" and deferred.detail == "the eco profile does not allow installs"


def test_a_newer_offer_supersedes_a_deferred_install(fleet):
    clock = Clock("01:00")

    async def main():
        service, link = await started(fleet, WINDOW, clock)
        link.offer(fleet.release(1))
        await state_reached(link, lambda s: s.state == "deferred" and s.release.version == 1)
        link.offer(fleet.release(2))  # e.g. the operator aborted a rollout and pushed a fix
        await state_reached(link, lambda s: s.state == "deferred" and s.release.version == 2)
        clock.set("04:00")
        service.install_gate.recheck()
        await state_reached(link, is_active(2))
        await stop(service)

    run(main())
    assert sorted(p.name for p in (fleet.state_dir / "models" / "slot-a").iterdir()) == ["model-v2.gguf"]
    assert Slots(fleet.state_dir).read_pointer().version == 2


def test_a_restart_between_the_switch_and_its_journal_entry_is_held_by_the_window_too(fleet):
    """Killed after the pointer switched but before `switched` was journaled: the start repairs the pointer,
    and outside the window the staged release waits like a downloaded one."""
    clock = Clock("03:00")

    async def first_life():
        service, link = await started(fleet, WINDOW, clock)
        service._pause_at = "switched"  # the test hook: stop right before the journal says switched
        link.offer(fleet.release(1))
        while Slots(fleet.state_dir).read_pointer() is None:
            await asyncio.sleep(0.01)
        await stop(service)

    async def second_life():
        clock.set("06:00")
        service, link = await started(fleet, WINDOW, clock)
        deferred = await state_reached(link, lambda s: s.state == "deferred")
        serving = service.core.status()["model"]["path"]
        clock.set("02:00")
        service.install_gate.recheck()
        await state_reached(link, is_active(1))
        await stop(service)
        return deferred, serving

    run(first_life())
    assert Journal(fleet.state_dir).load().update.step == "staged"
    assert resolve_active_model(fleet.state_dir) is None  # the daemon's start: back to the configured model
    deferred, serving = run(second_life())
    assert deferred.step == "staged" and deferred.reason == "install_window" and serving == str(fleet.configured)
    assert Slots(fleet.state_dir).read_pointer().version == 1


def test_no_policy_installs_at_once(fleet):
    async def main():
        service, link = await started(fleet, SETTINGS, Clock("01:00"))
        link.offer(fleet.release(1))
        await state_reached(link, is_active(1))
        await stop(service)
        return link

    assert "deferred" not in [s.state for s in run(main()).states()]
