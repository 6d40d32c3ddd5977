"""Updates against a hostile network and a full disk (issue 12 item 6)."""

from __future__ import annotations

import errno
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edged.errors import UpdateError
from edged.fleet.device.journal import Journal
from edged.fleet.manifest import Artifact
from edged.fleet.device.partial import PartialDownload
from edged.fleet.settings import UpdateSettings
from edged.fleet.trust import ExpiryClock
from tests.unit import test_fleet_trust_manifest as manifests
from tests.unit.test_fleet_update_service import (CHUNK, DEVICE, SETTINGS, TOPICS, FakeLink, Fleet, run,  # noqa: F401
                                                 started, state_reached, stop)


# ---- expiry on resume, two artifacts ------------------------------------------------------------

def test_an_accepted_manifest_that_expired_is_not_resumed(tmp_path: Path) -> None:
    """docs/fleet.md: expiry is checked again on resume; _check stopped at "already accepted" before."""
    fleet = manifests.Fleet(tmp_path)
    envelope = fleet.signed(expires="2026-06-02T00:00:00Z")
    fleet.verifier.verify(envelope)
    assert fleet.verifier.recheck_accepted(envelope).version == 5  # still valid: resumes
    fleet.verifier.clock = ExpiryClock(now=lambda: manifests.NOW + timedelta(days=2), synced=lambda: True)
    with pytest.raises(UpdateError) as refused:
        fleet.verifier.recheck_accepted(envelope)
    assert refused.value.reason == "expired"


def test_an_interrupted_download_whose_manifest_expired_fails_at_start_instead_of_resuming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's resume path asks for the expiry again: journaled before expiry, restarted after it."""
    from edged.fleet.device.slots import Slots

    fleet = Fleet(tmp_path)
    envelope = fleet.release(1)  # expires in a day
    settings = SETTINGS.model_copy(update={"max_retries": 1, "idle_timeout_s": 0.01})

    async def first_life() -> None:
        service, link = await started(fleet, settings)
        link.answering = False  # the depot goes quiet: the download stops part-way
        link.offer(envelope)
        await state_reached(link, lambda s: s.state == "failed")
        await stop(service)

    async def second_life():  # noqa: ANN202
        service, link = await started(fleet)
        state = await state_reached(link, lambda s: s.state in ("failed", "active"))
        await stop(service)
        return state, link.pulls()

    run(first_life())
    assert Journal(fleet.state_dir).load().update.step == "downloading"
    two_days_on = datetime.now(timezone.utc) + timedelta(days=2)  # the root (30 days) is still valid
    later = ExpiryClock(policy="trust-system-clock", now=lambda: two_days_on, synced=lambda: True)
    monkeypatch.setattr(UpdateSettings, "expiry_clock", lambda self: later)
    state, pulls = run(second_life())
    assert (state.state, state.reason) == ("failed", "expired")
    assert pulls == 0 and Slots(fleet.state_dir).read_pointer() is None
    assert Journal(fleet.state_dir).load().update.step == "failed"


def test_a_two_artifact_release_is_refused_before_its_version_is_recorded(tmp_path: Path) -> None:
    fleet = manifests.Fleet(tmp_path)
    fleet.verifier.limits = UpdateSettings(channels=["stable"]).limits()
    artifacts = [{"name": f"m{i}.gguf", "size": 900, "sha256": manifests.SHA, "format": "gguf"} for i in range(2)]
    assert fleet.rejected(fleet.signed(artifacts=artifacts)) == "artifact"  # versions.json unchanged
    assert fleet.verifier.verify(fleet.signed()).version == 5  # the same version with one file still installs


# ---- a full disk during pre-allocation ----------------------------------------------------------

def test_disk_full_during_preallocation_fails_at_once_and_deletes_the_partial(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    artifact = Artifact(name="model.gguf", size=10 * 1024 * 1024, sha256="0" * 64, format="gguf")
    partial = PartialDownload(tmp_path, artifact, 65536, "1" * 64)
    with pytest.raises(UpdateError) as failed:
        partial.open()
    assert failed.value.reason == "disk" and "No space" in str(failed.value)
    assert not partial.partial_path.exists() and not partial.bitmap_path.exists()


def test_a_file_system_without_fallocate_still_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unsupported(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported)
    artifact = Artifact(name="model.gguf", size=100_000, sha256="0" * 64, format="gguf")
    partial = PartialDownload(tmp_path, artifact, 65536, "1" * 64)
    assert partial.open() == 0
    assert partial.partial_path.stat().st_size == 100_000
    partial.close()


# ---- a forged but self-consistent chunk ---------------------------------------------------------

class ForgingLink(FakeLink):
    """A depot (or a broker peer) that answers chunk 2 with other bytes and their own matching hash."""

    def __init__(self, models: dict[str, bytes], forgeries: int) -> None:
        super().__init__(models)
        self.forgeries = forgeries

    def publish(self, topic, payload, qos=1, retain=False, **extra):  # noqa: ANN001, ANN201
        from edged.fleet.messages import parse_pull

        pull = parse_pull(payload) if topic.endswith("/update/pull") else None
        if pull is None or not self.forgeries or not pull.first <= 2 < pull.first + pull.count:
            return super().publish(topic, payload, qos, retain, **extra)
        self.forgeries -= 1
        real = self.models[pull.artifact]
        self.models[pull.artifact] = real[:2 * CHUNK] + os.urandom(CHUNK) + real[3 * CHUNK:]
        try:  # the frame carries the forged bytes and their own, matching SHA-256
            return super().publish(topic, payload, qos, retain, **extra)
        finally:
            self.models[pull.artifact] = real


async def _started_with(fleet: Fleet, link: FakeLink, settings: UpdateSettings):  # noqa: ANN202
    from tests.unit import test_fleet_update_service as service_tests

    original = service_tests.FakeLink
    service_tests.FakeLink = lambda models: link  # type: ignore[assignment,misc]
    try:
        return await started(fleet, settings)
    finally:
        service_tests.FakeLink = original  # type: ignore[misc]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def test_one_forged_chunk_does_not_fail_the_release_for_good(fleet: Fleet) -> None:
    settings = SETTINGS.model_copy(update={"retry_after_s": 1.0, "window_bytes": CHUNK, "request_bytes": CHUNK})

    async def main():  # noqa: ANN202
        link = ForgingLink(fleet.models, forgeries=1)
        service, _ = await _started_with(fleet, link, settings)
        link.offer(fleet.release(1))
        await state_reached(link, lambda s: s.state == "failed" and s.reason == "hash")
        await state_reached(link, lambda s: s.state == "active" and s.release and s.release.version == 1)
        await stop(service)
        return link

    run(main())
    record = Journal(fleet.state_dir).load().update
    assert record is not None and record.step == "committed" and record.hash_failures == 1


def test_a_release_that_never_matches_fails_after_a_few_whole_downloads(fleet: Fleet) -> None:
    settings = SETTINGS.model_copy(update={"retry_after_s": 1.0, "window_bytes": CHUNK, "request_bytes": CHUNK})

    async def main():  # noqa: ANN202
        link = ForgingLink(fleet.models, forgeries=1000)
        service, _ = await _started_with(fleet, link, settings)
        link.offer(fleet.release(1))
        while True:
            record = Journal(fleet.state_dir).load().update
            if record is not None and record.step == "failed":
                break
            await __import__("asyncio").sleep(0.05)
        await stop(service)
        return record

    record = run(main())
    assert record.reason == "hash" and record.hash_failures == 2  # three downloads in all
