"""ONNX directory releases on the device: per-file download, verification and resume, A/B install, GGUF <-> ONNX."""

from __future__ import annotations

import dataclasses
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
from edged.fleet.device.journal import Journal, SlotPointer
from edged.fleet.device.release_files import ReleaseFiles, slot_entry
from edged.fleet.device.service import UpdateService
from edged.fleet.device.slots import Slots
from edged.fleet.manifest import Artifact, HealthCheck, ReleaseManifest, TargetSelector
from edged.fleet.trust import utc_now
from tests.fakes import FixedEnergy, make_profile
from tests.unit.test_fleet_update_service import (BAD, CHUNK, DEVICE, GOOD, SETTINGS, TOPICS, Control, FakeLink, Fleet,
                                                  PathEngine, run, state_reached, stop)

FILES = {"edged_model.json": 300, "model.onnx": 2 * CHUNK + 5, "model.onnx.data": 4 * CHUNK, "tokenizer.json": 999}


class ModelEngine(Engine):
    """Picks its behaviour as create_engine picks the engine: a directory by its edged_model.json, a file by itself."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inner = PathEngine(path / "edged_model.json" if path.is_dir() else path)

    @property
    def loaded(self) -> bool:
        return self.inner.loaded

    def load(self, settings: EngineSettings) -> ModelInfo:
        if self.path.is_dir() and {p.name for p in self.path.iterdir()} != set(FILES):
            raise EngineError(f"{self.path} does not hold exactly the released files")
        info = self.inner.load(settings)
        return dataclasses.replace(info, path=str(self.path), format="onnx" if self.path.is_dir() else "gguf")

    def unload(self) -> None:
        self.inner.unload()

    def generate(self, messages: Any, prompt: Any, params: SamplingParams, sink: TokenSink) -> GenerationResult:
        return self.inner.generate(messages, prompt, params, sink)


class SelectiveLink(FakeLink):
    """A depot that does not answer for some files (a depot that lost them, or a cut mid-release)."""

    def __init__(self, models: dict[str, bytes]) -> None:
        super().__init__(models)
        self.silent_artifacts: set[str] = set()
        self.pulled: list[str] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, **kw: Any) -> Any:
        if topic.endswith("/update/pull"):
            from edged.fleet.messages import parse_pull

            artifact = parse_pull(payload).artifact
            self.pulled.append(artifact)
            if artifact in self.silent_artifacts:
                self.published.append((topic, payload, retain))
                return super().publish("ignored", b"", qos)
        return super().publish(topic, payload, qos, retain, **kw)


def release_onnx(fleet: Fleet, version: int, name: str = "smol-onnx", head: bytes = GOOD) -> bytes:
    listing = []
    for file, size in FILES.items():
        data = (head if file == "edged_model.json" else b"") + os.urandom(size - (len(head) if file ==
                                                                                    "edged_model.json" else 0))
        fleet.models[f"{name}/{file}"] = data
        listing.append(Artifact(name=f"{name}/{file}", size=size, sha256=hashlib.sha256(data).hexdigest(),
                                format="onnx-dir"))
    manifest = ReleaseManifest(fleet="default", channel="stable", version=version,
                               expires=utc_now() + timedelta(days=1), targets=TargetSelector(), artifacts=listing,
                               chunk_size=CHUNK, health_check=HealthCheck(prompt="Say OK.", max_tokens=4, timeout_s=30))
    return fleet.keys.sign_release(manifest)


async def started(fleet: Fleet, settings: Any = SETTINGS) -> tuple[UpdateService, SelectiveLink]:
    core = Core(ModelWorker(ModelEngine(fleet.configured)), make_profile(), RequestLimits(), FixedEnergy())
    await core.start()
    link = SelectiveLink(fleet.models)
    service = UpdateService(settings, fleet.state_dir, DEVICE, TOPICS, core, Control(core, fleet.configured))
    service.engine_factory = ModelEngine
    await service.start(link)  # type: ignore[arg-type]
    return service, link


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_gguf_to_onnx_and_back_by_release(fleet: Fleet) -> None:
    async def main() -> list[str]:
        service, link = await started(fleet)
        paths = []
        link.offer(fleet.release(1))
        await state_reached(link, lambda s: s.state == "active" and s.release.version == 1)
        paths.append(service.core.status()["model"]["path"])
        link.offer(release_onnx(fleet, 2))
        onnx = await state_reached(link, lambda s: s.state == "active" and s.release.version == 2)
        paths.append(service.core.status()["model"]["path"])
        assert onnx.active.model == "smol-onnx" and onnx.active.slot == "slot-b"
        link.offer(fleet.release(3))
        await state_reached(link, lambda s: s.state == "active" and s.release.version == 3)
        paths.append(service.core.status()["model"]["path"])
        await stop(service)
        return paths

    models = fleet.state_dir / "models"
    assert run(main()) == [str(models / "slot-a" / "model-v1.gguf"), str(models / "slot-b" / "smol-onnx"),
                           str(models / "slot-a" / "model-v3.gguf")]
    assert sorted(p.name for p in (models / "slot-b" / "smol-onnx").iterdir()) == sorted(FILES)  # no work files
    assert [p.name for p in (models / "slot-a").iterdir()] == ["model-v3.gguf"]  # v1 went when v3 came
    pointer = Slots(fleet.state_dir).read_pointer()
    assert pointer is not None and (pointer.slot, pointer.model, pointer.version) == ("slot-a", "model-v3.gguf", 3)


def test_an_onnx_release_that_fails_its_health_check_rolls_back(fleet: Fleet) -> None:
    async def main() -> Any:
        service, link = await started(fleet)
        link.offer(release_onnx(fleet, 1, head=BAD))
        state = await state_reached(link, lambda s: s.state == "rolled_back")
        path = service.core.status()["model"]["path"]
        await stop(service)
        return state, path

    state, path = run(main())
    assert state.reason == "load" and state.active.slot is None and path == str(fleet.configured)
    assert Slots(fleet.state_dir).read_pointer() is None


def test_one_file_with_wrong_bytes_fails_that_file_only(fleet: Fleet) -> None:
    envelope = release_onnx(fleet, 1)
    good_weights = fleet.models["smol-onnx/model.onnx.data"]
    fleet.models["smol-onnx/model.onnx.data"] = os.urandom(len(good_weights))  # the depot serves other bytes

    async def main() -> Any:
        service, link = await started(fleet)
        link.offer(envelope)
        state = await state_reached(link, lambda s: s.state == "failed")
        await stop(service)
        return state

    state = run(main())
    assert state.reason == "hash" and Slots(fleet.state_dir).read_pointer() is None
    directory = fleet.state_dir / "models" / "slot-a" / "smol-onnx"
    # The files before it were verified and stay for the retry; the one that did not match is gone.
    assert {p.name for p in directory.iterdir()} == {"edged_model.json.partial", "edged_model.json.bitmap",
                                                      "model.onnx.partial", "model.onnx.bitmap"}
    assert Journal(fleet.state_dir).load().update.hash_failures == 1


def test_a_restart_resumes_per_file(fleet: Fleet) -> None:
    envelope = release_onnx(fleet, 1)
    settings = SETTINGS.model_copy(update={"max_retries": 1, "idle_timeout_s": 0.01})

    async def first_life() -> None:
        service, link = await started(fleet, settings)
        link.silent_artifacts = {"smol-onnx/model.onnx.data", "smol-onnx/tokenizer.json"}
        link.offer(envelope)
        await state_reached(link, lambda s: s.state == "failed")
        await stop(service)

    async def second_life() -> list[str]:
        service, link = await started(fleet)
        await state_reached(link, lambda s: s.state == "active")
        await stop(service)
        return link.pulled

    run(first_life())
    assert Journal(fleet.state_dir).load().update.step == "downloading"
    pulled = run(second_life())
    assert set(pulled) == {"smol-onnx/model.onnx.data", "smol-onnx/tokenizer.json"}  # the done files are not pulled


def test_prepare_removes_stale_files_and_planted_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    listing = [Artifact(name=f"m/{name}", size=size, sha256="ab" * 32, format="onnx-dir") for name, size in
               FILES.items()]
    slot = tmp_path / "slot-a"
    (slot / "m" / "old").mkdir(parents=True)
    (slot / "m" / "old" / "weights.bin").write_bytes(b"old")
    (slot / "m" / "stale.onnx").write_bytes(b"stale")
    (slot / "m" / "model.onnx.partial").symlink_to(outside / "victim")
    (slot / "m" / "tokenizer.json.partial").write_bytes(b"resumable")
    files = ReleaseFiles(slot, listing, CHUNK, "cd" * 32)
    files.prepare()
    assert {p.name for p in (slot / "m").iterdir()} == {"tokenizer.json.partial"}
    files.parts[1].open()  # model.onnx: created as a real file in the slot, not through the removed link
    files.parts[1].close()
    assert not (outside / "victim").exists() and not (slot / "m" / "model.onnx.partial").is_symlink()
    (slot / "m").rename(tmp_path / "aside")
    (slot / "m").symlink_to(outside, target_is_directory=True)
    files.prepare()
    assert (slot / "m").is_dir() and not (slot / "m").is_symlink() and not list(outside.iterdir())


def test_a_directory_slot_is_usable_only_as_it_was_verified(tmp_path: Path) -> None:
    listing = [Artifact(name=f"m/{name}", size=size, sha256="ab" * 32, format="onnx-dir") for name, size in
               FILES.items()]
    entry = slot_entry(listing)
    directory = tmp_path / "models" / "slot-b" / "m"
    directory.mkdir(parents=True)
    for name, size in FILES.items():
        (directory / name).write_bytes(b"x" * size)
    pointer = SlotPointer(slot="slot-b", model="m", size=entry.size, sha256=entry.sha256, channel="s", version=1)
    slots = Slots(tmp_path)
    assert slots.usable(pointer)
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer.json").symlink_to(tmp_path / "elsewhere")
    assert not slots.usable(pointer)
    (directory / "tokenizer.json").unlink()
    (directory / "tokenizer.json").write_bytes(b"x" * (FILES["tokenizer.json"] - 1))
    assert not slots.usable(pointer)  # wrong total size
    (directory / "tokenizer.json").write_bytes(b"x" * FILES["tokenizer.json"])
    (directory / "edged_model.json").rename(directory / "renamed.json")
    assert not slots.usable(pointer)
