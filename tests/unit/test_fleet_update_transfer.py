"""The pull loop and the resumable partial file: fault matrix, bounded retries, resume, pause, size cap."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.errors import UpdateError
from edged.testing.depot_faults import FaultInjector, FaultPlan
from edged.fleet.manifest import Artifact
from edged.fleet.messages import PullRequest, encode_chunk, encode_error
from edged.fleet.device.partial import PartialDownload
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.transfer import ChunkInbox, ChunkTransfer
from edged.mqtt.inbound import AsyncInbox, InboundMessage

CHUNK = 16 * 1024
MANIFEST = "aa" * 32
FAST = UpdateSettings(window_bytes=8 * CHUNK, request_bytes=2 * CHUNK, idle_timeout_s=0.05, max_retries=50)


def model_bytes(size: int) -> tuple[bytes, Artifact]:
    data = b"GGUF" + os.urandom(size - 4)
    return data, Artifact(name="m.gguf", size=size, sha256=hashlib.sha256(data).hexdigest(), format="gguf")


class FakeDepot:
    """Answers pull requests into an asyncio queue, optionally through the real fault injector."""

    def __init__(self, data: bytes, *, version: int = 2, faults: FaultPlan | None = None,
                 serve: Callable[[int], bool] = lambda index: True) -> None:
        self.data = data
        self.version = version
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.injector = FaultInjector(faults) if faults else None
        self.serve = serve
        self.requested: list[int] = []

    def __call__(self, request: PullRequest) -> None:
        for index in range(request.first, request.first + request.count):
            self.requested.append(index)
            if not self.serve(index):
                continue
            chunk = self.data[index * CHUNK : (index + 1) * CHUNK]
            if self.injector is None:
                frames = [encode_chunk(request.channel, request.version, request.artifact, index, chunk)]
            else:
                frames = self.injector.apply(request.channel, request.version, request.artifact, index, chunk)
            for frame in frames:
                self.queue.put_nowait(frame)
        if self.injector is not None:
            for frame in self.injector.flush():
                self.queue.put_nowait(frame)


def transfer(tmp_path: Path, artifact: Artifact, depot: FakeDepot, settings: UpdateSettings = FAST,
             gate: Callable[[], str | None] = lambda: None, manifest: str = MANIFEST,
             progress: Callable[[int, int, str | None], None] = lambda *_: None,
             ) -> tuple[PartialDownload, ChunkTransfer]:
    partial = PartialDownload(tmp_path, artifact, CHUNK, manifest)
    partial.open()
    return partial, ChunkTransfer(partial, "stable", depot.version, settings, depot, gate, progress)


async def pull(tmp_path: Path, data: bytes, depot: FakeDepot, **kwargs) -> tuple[PartialDownload, ChunkTransfer]:
    partial, loop = transfer(tmp_path, model_bytes_like(data), depot, **kwargs)
    await loop.run(depot.queue.get)
    return partial, loop


def model_bytes_like(data: bytes) -> Artifact:
    return Artifact(name="m.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest(), format="gguf")


def test_clean_transfer_writes_exactly_the_released_bytes(tmp_path):
    data, artifact = model_bytes(10 * CHUNK + 123)  # a short last chunk
    depot = FakeDepot(data)
    partial, loop = asyncio.run(pull(tmp_path, data, depot))
    partial.verify()
    assert partial.partial_path.read_bytes() == data
    assert loop.stats.received == 11 and loop.stats.re_requests == 0
    assert loop.stats.requests < 11  # several chunks per pull request
    assert sorted(depot.requested) == list(range(11))


@pytest.mark.parametrize("plan, counter", [
    (FaultPlan(drop=0.2, seed=1), "re_requests"),
    (FaultPlan(dup=0.3, seed=2), "duplicates"),
    (FaultPlan(reorder=0.5, seed=3), None),
    (FaultPlan(garble=0.2, seed=4), "garbled"),
    (FaultPlan(truncate=0.2, seed=5), "garbled"),
    (FaultPlan(stale=0.3, seed=6), "stale"),
    (FaultPlan(drop=0.1, dup=0.1, reorder=0.2, garble=0.1, truncate=0.05, stale=0.1, seed=7), "re_requests"),
], ids=["drop", "duplicate", "reorder", "garble", "truncate", "stale", "all"])
def test_fault_matrix_still_completes_with_the_exact_bytes(tmp_path, plan, counter):
    data, _ = model_bytes(40 * CHUNK + 5)
    depot = FakeDepot(data, faults=plan)
    partial, loop = asyncio.run(pull(tmp_path, data, depot))
    partial.verify()
    assert partial.partial_path.read_bytes() == data
    assert depot.injector is not None and sum(depot.injector.counts.values()) > 0
    if counter is not None:
        assert getattr(loop.stats, counter) > 0, loop.stats


@pytest.mark.timeout(60)  # without the immediate re-request this would wait for a 600 s timer
def test_garbled_chunk_is_asked_for_again_at_once_not_after_the_idle_timer(tmp_path):
    data, _ = model_bytes(4 * CHUNK)
    garbled_once: set[int] = set()

    class GarbleFirstCopy(FakeDepot):
        def __call__(self, request: PullRequest) -> None:
            for index in range(request.first, request.first + request.count):
                self.requested.append(index)
                frame = bytearray(encode_chunk("stable", 2, "m.gguf", index, data[index * CHUNK:(index + 1) * CHUNK]))
                if index not in garbled_once:
                    garbled_once.add(index)
                    frame[-1] ^= 0xFF
                self.queue.put_nowait(bytes(frame))

    depot = GarbleFirstCopy(data)
    slow_timer = FAST.model_copy(update={"idle_timeout_s": 600.0})  # only the immediate re-request can finish
    partial, loop = asyncio.run(pull(tmp_path, data, depot, settings=slow_timer))
    assert loop.stats.garbled == 4 and loop.stats.re_requests == 4
    partial.verify()


def test_a_depot_that_never_answers_fails_after_bounded_retries_and_keeps_the_partial(tmp_path):
    data, _ = model_bytes(6 * CHUNK)
    depot = FakeDepot(data, serve=lambda index: index < 3)
    settings = FAST.model_copy(update={"max_retries": 3, "idle_timeout_s": 0.01})
    with pytest.raises(UpdateError) as raised:
        asyncio.run(pull(tmp_path, data, depot, settings=settings))
    assert raised.value.reason == "transfer"
    assert depot.requested.count(3) == 3  # exactly max_retries requests of a missing chunk
    resumed = PartialDownload(tmp_path, model_bytes_like(data), CHUNK, MANIFEST)
    assert resumed.open() == 3  # what did arrive was made durable on the way out


def test_depot_refusals_are_counted_and_do_not_write(tmp_path):
    data, _ = model_bytes(2 * CHUNK)

    class Refusing(FakeDepot):
        def __call__(self, request: PullRequest) -> None:
            self.queue.put_nowait(encode_error("stable", 2, "m.gguf", request.first, "no such release"))

    settings = FAST.model_copy(update={"max_retries": 2, "idle_timeout_s": 0.01})
    depot = Refusing(data)
    partial, loop = transfer(tmp_path, model_bytes_like(data), depot, settings=settings)
    with pytest.raises(UpdateError):
        asyncio.run(loop.run(depot.queue.get))
    assert loop.stats.depot_errors >= 2 and partial.received == 0


@pytest.mark.parametrize("done_fraction", [0.0, 0.5, 0.99])
def test_resume_asks_only_for_the_missing_chunks(tmp_path, done_fraction):
    data, _ = model_bytes(100 * CHUNK)
    have = int(100 * done_fraction)
    first = FakeDepot(data, serve=lambda index: index < have)
    # Long enough that a loaded machine still gets every served chunk in before the pull gives up.
    settings = FAST.model_copy(update={"max_retries": 1, "idle_timeout_s": 0.5})
    if have < 100:
        with pytest.raises(UpdateError):
            asyncio.run(pull(tmp_path, data, first, settings=settings))
    second = FakeDepot(data)
    partial, loop = asyncio.run(pull(tmp_path, data, second))
    assert sorted(set(second.requested)) == list(range(have, 100))
    assert loop.stats.received == 100 - have
    partial.verify()


def test_resume_after_the_download_but_before_the_hash_check(tmp_path):
    data, _ = model_bytes(8 * CHUNK)
    asyncio.run(pull(tmp_path, data, FakeDepot(data)))
    again = FakeDepot(data)
    partial, loop = asyncio.run(pull(tmp_path, data, again))
    assert again.requested == [] and loop.stats.received == 0
    partial.verify()


def test_a_bitmap_of_another_manifest_is_never_reused(tmp_path):
    data, artifact = model_bytes(4 * CHUNK)
    asyncio.run(pull(tmp_path, data, FakeDepot(data)))
    other = PartialDownload(tmp_path, artifact, CHUNK, "bb" * 32)
    assert other.open() == 0


def test_unsynced_chunks_are_not_claimed_after_a_crash(tmp_path):
    data, artifact = model_bytes(4 * CHUNK)
    partial = PartialDownload(tmp_path, artifact, CHUNK, MANIFEST)
    partial.open()
    partial.write(0, data[:CHUNK])
    partial.write(1, data[CHUNK:2 * CHUNK])
    # "Power cut": no sync, the process is gone. The bitmap on disk may under-report, never over-report.
    assert PartialDownload(tmp_path, artifact, CHUNK, MANIFEST).open() == 0
    partial.sync()
    assert PartialDownload(tmp_path, artifact, CHUNK, MANIFEST).open() == 2


def test_wrong_length_and_out_of_range_chunks_never_touch_the_file(tmp_path):
    data, artifact = model_bytes(2 * CHUNK)
    partial = PartialDownload(tmp_path, artifact, CHUNK, MANIFEST)
    partial.open()
    with pytest.raises(UpdateError):
        partial.write(1, data[:CHUNK] + b"x")  # past the signed size: the hard cap
    depot = FakeDepot(data)
    loop = ChunkTransfer(partial, "stable", 2, FAST, depot, lambda: None, lambda *_: None)
    asyncio.run(loop._accept(encode_chunk("stable", 2, "m.gguf", 7, data[:CHUNK])))
    asyncio.run(loop._accept(encode_chunk("stable", 2, "m.gguf", 0, data[:CHUNK] + b"extra")))
    asyncio.run(loop._accept(b"EDCH junk"))
    assert loop.stats.garbled == 2 and loop.stats.malformed == 1 and partial.received == 0
    assert partial.partial_path.stat().st_size == artifact.size


def test_consistent_but_wrong_bytes_fail_the_final_hash_check(tmp_path):
    data, _ = model_bytes(4 * CHUNK)
    wrong = bytearray(data)
    wrong[5] ^= 1  # the depot's file differs; its per-chunk hashes are of its own bytes, so they pass
    depot = FakeDepot(bytes(wrong))
    partial, loop = transfer(tmp_path, model_bytes_like(data), depot)
    asyncio.run(loop.run(depot.queue.get))
    with pytest.raises(UpdateError) as raised:
        partial.verify()
    assert raised.value.reason == "hash"


def test_no_request_goes_out_while_the_profile_forbids_downloads(tmp_path):
    data, _ = model_bytes(6 * CHUNK)
    depot = FakeDepot(data)
    allowed = {"now": False}
    seen: dict[str, int] = {}

    def progress(done: int, total: int, paused: str | None) -> None:
        if paused == "profile" and "requests_while_paused" not in seen:
            seen["requests_while_paused"] = len(depot.requested)
            allowed["now"] = True  # the profile changes back once the pause was reported

    partial, loop = transfer(tmp_path, model_bytes_like(data), depot,
                             gate=lambda: None if allowed["now"] else "profile", progress=progress)
    asyncio.run(loop.run(depot.queue.get))
    assert seen["requests_while_paused"] == 0
    partial.verify()


def test_chunk_inbox_is_bounded_in_bytes():
    async def scenario() -> tuple[int, int]:
        inbox = ChunkInbox(AsyncInbox(asyncio.get_running_loop(), 1000), max_bytes=3 * CHUNK)
        for _ in range(5):
            inbox(InboundMessage(topic="edged/d/update/chunks", payload=b"x" * CHUNK, qos=1))
        await asyncio.sleep(0)
        first = await inbox.get()
        inbox(InboundMessage(topic="edged/d/update/chunks", payload=b"y" * CHUNK, qos=1))
        return len(first), inbox.dropped

    size, dropped = asyncio.run(scenario())
    assert size == CHUNK and dropped == 2
