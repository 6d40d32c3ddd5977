"""UpdateService and Updater with real trust checks, the real core and a fake link: every outcome and resume path."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edged.config import RequestLimits
from edged.core import Core
from edged.engines.base import Engine, EngineSettings, GenerationResult, ModelInfo, SamplingParams, TokenSink
from edged.engines.worker import ModelWorker
from edged.errors import EngineError
from edged.fleet.device.journal import Journal
from edged.fleet.depot.keystore import OperatorKeys
from edged.fleet.manifest import Artifact, HealthCheck, ReleaseManifest, TargetSelector
from edged.fleet.messages import encode_chunk, parse_pull, parse_state
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.service import UpdateService
from edged.fleet.device.slots import Slots
from edged.fleet.trust import ExpiryClock, TrustStore, utc_now
from edged.mqtt.inbound import AsyncInbox, InboundMessage
from edged.mqtt.publishing import PublishHandle
from edged.state import InstallState
from edged.topics import DeviceTopics
from tests.fakes import FixedEnergy, make_profile
from tests.slowdown import scaled

DEVICE = "pi-07"
CHUNK = 16 * 1024
TOPICS = DeviceTopics("edged", DEVICE)
SETTINGS = UpdateSettings(channels=["stable"], groups=["lab"], clock_policy="trust-system-clock", idle_timeout_s=0.05,
                          retry_after_s=3600.0, window_bytes=8 * CHUNK, request_bytes=2 * CHUNK)
GOOD, BAD, EMPTY = b"GGUF good", b"GGUF bad!", b"GGUF mute"


class PathEngine(Engine):
    """Behaves by the first bytes of its file: 'good' answers, 'bad!' fails to load, 'mute' answers nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self, settings: EngineSettings) -> ModelInfo:
        if self.path.read_bytes()[:9] == BAD:
            raise EngineError(f"cannot load {self.path.name}: corrupt GGUF")
        self._loaded = True
        return ModelInfo(self.path.stem, str(self.path), "gguf", 0, 0, settings.context, settings.context, 1)

    def unload(self) -> None:
        self._loaded = False

    def generate(self, messages, prompt, params: SamplingParams, sink: TokenSink) -> GenerationResult:
        count = 0
        if self.path.read_bytes()[:9] != EMPTY:
            for piece in ("O", "K"):
                count += 1
                sink(piece)
        return GenerationResult("stop", 3, count, 0, 0.001, 0.001)


class FakeLink:
    """Stands in for MqttLink: records publishes, delivers offers, and plays a depot for pull requests."""

    def __init__(self, models: dict[str, bytes]) -> None:
        self.models = models  # artifact name -> bytes the depot serves
        self.subscriptions: dict[str, Any] = {}
        self.published: list[tuple[str, bytes, bool]] = []
        self.is_connected = True
        self.answering = True
        self.silent_versions: set[int] = set()  # releases the depot never answers for

    def inbox(self, loop: asyncio.AbstractEventLoop, maxsize: int, max_bytes: int | None = None) -> AsyncInbox:
        return AsyncInbox(loop, maxsize, max_bytes=max_bytes)

    def subscribe(self, topic_filter: str, qos: int, handler: Any) -> None:
        self.subscriptions[topic_filter] = handler

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **_: Any) -> PublishHandle:
        self.published.append((topic, payload, retain))
        pull = parse_pull(payload) if topic == f"edged/{DEVICE}/update/pull" else None
        if pull is not None and self.answering and pull.version not in self.silent_versions:
            data = self.models[pull.artifact]
            for index in range(pull.first, min(pull.first + pull.count, -(-len(data) // CHUNK))):
                frame = encode_chunk(pull.channel, pull.version, pull.artifact, index,
                                     data[index * CHUNK:(index + 1) * CHUNK])
                self.subscriptions[TOPICS.update_chunks](InboundMessage(topic=TOPICS.update_chunks, payload=frame,
                                                                        qos=1))
        handle = PublishHandle(1, topic, qos)
        handle.complete(True)
        return handle

    def offer(self, envelope: bytes, topic: str = TOPICS.update_offer) -> None:
        self.subscriptions[topic](InboundMessage(topic=topic, payload=envelope, qos=1, retain=True))

    def states(self) -> list[Any]:
        return [parse_state(p) for t, p, _ in self.published if t == TOPICS.update_state]

    def pulls(self) -> int:
        return sum(1 for t, _, _ in self.published if t.endswith("/update/pull"))


class Control:
    """The update side of the control port (ports.UpdateControlPort), over a real Core."""

    def __init__(self, core: Core | None, configured: Path) -> None:
        self._core = core
        self.configured_model = configured

    def downloads_allowed(self) -> bool:
        assert self._core is not None
        return self._core.profile.updates.allow_downloads

    def install_state(self) -> InstallState:
        assert self._core is not None
        queue, profile = self._core.status()["queue"], self._core.profile
        return InstallState(busy=queue["waiting"] + queue["running"] > 0, profile=profile.name,
                            parked=profile.name == "parked", profile_allows_installs=profile.updates.allow_installs)


class Fleet:
    """Operator keys, signed releases of model files, a provisioned device state dir."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = OperatorKeys.create(root / "keys", root_keys=1, root_threshold=1, release_keys=1,
                                        release_threshold=1, expires=utc_now() + timedelta(days=30))
        self.state_dir = root / "state"
        TrustStore(self.state_dir, ExpiryClock(policy="trust-system-clock")).provision(self.keys.root_path.read_bytes())
        self.models: dict[str, bytes] = {}
        self.configured = root / "configured.gguf"
        self.configured.write_bytes(GOOD + b" configured")

    def release(self, version: int, head: bytes = GOOD, name: str | None = None, keys: OperatorKeys | None = None,
                targets: TargetSelector | None = None, channel: str = "stable", size: int = 5 * CHUNK + 7) -> bytes:
        name = name or f"model-v{version}.gguf"
        data = head + os.urandom(size - len(head))
        self.models[name] = data
        artifact = Artifact(name=name, size=size, sha256=hashlib.sha256(data).hexdigest(), format="gguf")
        manifest = ReleaseManifest(fleet="default", channel=channel, version=version,
                                   expires=utc_now() + timedelta(days=1), targets=targets or TargetSelector(),
                                   artifacts=[artifact], chunk_size=CHUNK,
                                   health_check=HealthCheck(prompt="Say OK.", max_tokens=4, timeout_s=30))
        return (keys or self.keys).sign_release(manifest)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


async def started(fleet: Fleet, settings: UpdateSettings = SETTINGS,
                  profile: Any = None) -> tuple[UpdateService, FakeLink]:
    core = Core(ModelWorker(PathEngine(fleet.configured)), profile or make_profile(), RequestLimits(), FixedEnergy())
    await core.start()
    link = FakeLink(fleet.models)
    service = UpdateService(settings, fleet.state_dir, DEVICE, TOPICS, core, Control(core, fleet.configured))
    service.engine_factory = PathEngine
    await service.start(link)  # type: ignore[arg-type]
    return service, link


async def state_reached(link: FakeLink, predicate: Any) -> Any:
    while True:
        for state in link.states():
            if predicate(state):
                return state
        await asyncio.sleep(0.01)


async def stop(service: UpdateService) -> None:
    await service.stop()
    await service.core.stop()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, scaled(60)))


def test_offer_to_active_swaps_the_model_and_commits(fleet):
    async def main():
        service, link = await started(fleet)
        link.offer(fleet.release(1))
        await state_reached(link, lambda s: s.state == "active" and s.release and s.release.version == 1)
        status = service.core.status()
        await stop(service)
        return link, status

    link, status = run(main())
    assert status["model"]["path"] == str(fleet.state_dir / "models" / "slot-a" / "model-v1.gguf")
    labels = [s.state for s in link.states()]
    assert labels[0] == "idle" and "downloading" in labels and "verifying" in labels and "installing" in labels
    pointer = Slots(fleet.state_dir).read_pointer()
    assert pointer is not None and pointer.slot == "slot-a" and pointer.version == 1
    assert Journal(fleet.state_dir).load().update.step == "committed"
    assert all(retain for t, _, retain in link.published if t == TOPICS.update_state)


@pytest.mark.parametrize("head, reason", [(BAD, "load"), (EMPTY, "empty")])
def test_failed_health_check_rolls_back_to_the_old_model(fleet, head, reason):
    async def main():
        service, link = await started(fleet)
        link.offer(fleet.release(1, head=head))
        state = await state_reached(link, lambda s: s.state == "rolled_back")
        job = service.core.submit(_ask(), transport="test", peer="t")
        answer = [event async for event in job.stream()][-1]
        status = service.core.status()
        await stop(service)
        return state, status, answer

    state, status, answer = run(main())
    assert state.reason == reason and state.release.version == 1 and state.active.slot is None
    assert status["model"]["path"] == str(fleet.configured)
    assert answer.text == "OK"
    assert Slots(fleet.state_dir).read_pointer() is None
    record = Journal(fleet.state_dir).load().update
    assert record.step == "rolled_back" and record.reason == reason


def test_trust_faults_are_reported_and_nothing_is_downloaded(fleet, tmp_path):
    """Only a verified offer is reported `rejected`: unsigned junk from anyone is counted, never retained."""
    foreign = OperatorKeys.create(tmp_path / "foreign", root_keys=1, root_threshold=1, release_keys=1,
                                  release_threshold=1, expires=utc_now() + timedelta(days=30))

    async def main():
        service, link = await started(fleet)
        link.offer(fleet.release(5, keys=foreign))
        link.offer(b"\x00not json")
        link.offer(fleet.release(6, targets=TargetSelector(devices=["someone-else"])))
        await state_reached(link, lambda s: s.reason == "target")  # offers are handled in order
        await stop(service)
        return service, link

    service, link = run(main())
    assert [(s.state, s.reason) for s in link.states()][1:] == [("rejected", "target")]
    assert service.unverified_offers == 2
    assert link.pulls() == 0 and not (fleet.state_dir / "models").exists()


def test_lower_version_rejected_and_the_same_manifest_again_is_quiet(fleet):
    older = fleet.release(1)
    newer = fleet.release(2)

    async def main():
        service, link = await started(fleet)
        link.offer(newer)
        await state_reached(link, lambda s: s.state == "active")
        published = len(link.published)
        link.offer(newer, topic="edged/fleet/default/channel/stable/offer")  # the retained offer, seen again
        link.offer(older)
        await state_reached(link, lambda s: s.reason == "version")
        await stop(service)
        return link, published

    link, published = run(main())
    after = link.published[published:]
    assert [parse_state(p).label() for t, p, _ in after] == ["rejected (version)"]


def test_accepted_but_never_journaled_starts_when_seen_again(fleet):
    envelope = fleet.release(1)

    async def main():
        service, link = await started(fleet)
        service.verifier.verify(envelope)  # persisted, then "killed" before the journal knew it
        link.offer(envelope)
        await state_reached(link, lambda s: s.state == "active")
        await stop(service)

    run(main())
    assert Journal(fleet.state_dir).load().update.version == 1


def test_newer_offer_supersedes_a_download_in_progress(fleet):
    first, second = fleet.release(1), fleet.release(2)

    async def main():
        service, link = await started(fleet)
        link.silent_versions.add(1)
        link.offer(first)
        await state_reached(link, lambda s: s.state == "downloading")
        link.offer(second)
        state = await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return state

    state = run(main())
    assert state.release.version == 2
    assert sorted(p.name for p in (fleet.state_dir / "models" / "slot-a").iterdir()) == ["model-v2.gguf"]


def test_a_download_out_of_retries_fails_and_resumes_when_offered_again(fleet):
    envelope = fleet.release(1)
    # The chunk deadline must outlast the fake depot's answer once it answers again (under QEMU too).
    settings = SETTINGS.model_copy(update={"max_retries": 2, "idle_timeout_s": scaled(0.01)})

    async def main():
        service, link = await started(fleet, settings)
        link.answering = False
        link.offer(envelope)
        failed = await state_reached(link, lambda s: s.state == "failed")
        link.answering = True
        link.offer(envelope)  # the operator pushes it again
        await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return failed

    failed = run(main())
    assert failed.reason == "transfer" and failed.step == "downloading"


def test_wrong_bytes_from_the_depot_fail_the_hash_check_and_keep_the_old_model(fleet):
    envelope = fleet.release(1)
    fleet.models["model-v1.gguf"] = GOOD + os.urandom(len(fleet.models["model-v1.gguf"]) - len(GOOD))

    async def main():
        service, link = await started(fleet)
        link.offer(envelope)
        state = await state_reached(link, lambda s: s.state == "failed")
        await stop(service)
        return state

    state = run(main())
    assert state.reason == "hash" and Slots(fleet.state_dir).read_pointer() is None
    assert list((fleet.state_dir / "models" / "slot-a").iterdir()) == []


def test_downloads_wait_while_the_profile_forbids_them(fleet):
    parked = make_profile("parked")
    parked = parked.model_copy(update={"updates": parked.updates.model_copy(update={"allow_downloads": False})})

    async def main():
        service, link = await started(fleet, profile=parked)
        link.offer(fleet.release(1))
        paused = await state_reached(link, lambda s: s.state == "paused")
        pulls_while_paused = link.pulls()
        service.core.set_profile(make_profile("balanced"), reason="test")
        await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return paused, pulls_while_paused

    paused, pulls = run(main())
    assert paused.reason == "profile" and paused.label() == "paused (0%)" and pulls == 0


def test_an_interrupted_download_resumes_at_start(fleet):
    envelope = fleet.release(1)
    settings = SETTINGS.model_copy(update={"max_retries": 1, "idle_timeout_s": 0.01})

    async def first_life():
        service, link = await started(fleet, settings)
        link.answering = False
        link.offer(envelope)
        await state_reached(link, lambda s: s.state == "failed")
        await stop(service)

    async def second_life():
        service, link = await started(fleet)
        state = await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return state

    run(first_life())
    assert Journal(fleet.state_dir).load().update.step == "downloading"
    assert run(second_life()).release.version == 1


def test_group_and_channel_topics_are_followed(fleet):
    service = UpdateService(SETTINGS, fleet.state_dir, DEVICE, TOPICS, None, Control(None, fleet.configured))  # type: ignore[arg-type]
    assert service.offer_topics() == ["edged/pi-07/update/offer", "edged/fleet/default/channel/stable/offer",
                                      "edged/fleet/default/group/lab/offer"]


def _ask() -> Any:
    from edged.messages import ChatMessage, ChatRequest

    return ChatRequest(messages=[ChatMessage(role="user", content="hi")], max_tokens=4)


def test_the_same_offer_again_while_it_starts_is_not_queued_twice(fleet):
    envelope = fleet.release(1)

    async def main():
        service, link = await started(fleet)
        service._pause_at = "verified"  # the test hook: hold the update before its first journal write
        await service.handle_offer(envelope)
        while service._running is None:
            await asyncio.sleep(0.01)
        await service.handle_offer(envelope)  # e.g. the retained offer after a reconnect
        queued = service._next
        await stop(service)
        return queued

    assert run(main()) is None


def test_an_offer_refused_for_an_unsynced_clock_is_checked_again_later(fleet):
    synced = {"now": False}
    settings = SETTINGS.model_copy(update={"clock_policy": "reject", "retry_after_s": 1.0})

    async def main():
        service, link = await started(fleet, settings)
        service.verifier.clock = ExpiryClock(policy="reject", synced=lambda: synced["now"])
        link.offer(fleet.release(1))
        refused = await state_reached(link, lambda s: s.state == "rejected")
        synced["now"] = True  # NTP catches up; nobody pushes again
        await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return refused

    assert run(main()).reason == "clock"
