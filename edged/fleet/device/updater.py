"""One update from its last journaled step to the end: download, stage, switch, health check, commit or roll back.

The release's files (one GGUF, or an ONNX directory's files) are handled by ``ReleaseFiles``; from the
switch on, a directory is a model like a file: the engine is picked by what the slot holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

import structlog

from edged.engines import create_engine
from edged.engines.base import Engine
from edged.errors import Busy, EngineError, RequestError, UpdateError
from edged.fleet.device.journal import Journal, SlotPointer, Step, UpdateRecord
from edged.fleet.manifest import ReleaseManifest
from edged.fleet.device.release_files import ReleaseFiles
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.slots import Slots
from edged.fleet.device.transfer import ChunkTransfer, Gate, Progress, Receive, SendPull
from edged.messages import ChatMessage, ChatRequest, ErrorEvent, FinalEvent
from edged.ports import ModelCorePort

logger = structlog.get_logger(__name__)

BUSY_RETRY_S = 0.5  # the health check waits politely when the queue is full
MAX_HASH_ATTEMPTS = 3  # whole downloads of one release before a wrong SHA-256 fails it for good


class Reporter(Protocol):
    def __call__(self, state: str, record: UpdateRecord | None, *, reason: str | None = None,
                 detail: str | None = None) -> None: ...


PauseHook = Callable[[str], Awaitable[None]]
InstallHook = Callable[[UpdateRecord], Awaitable[None]]  # returns once the install policy allows it
ProgressHook = Callable[[UpdateRecord, int, int, str | None], None]


class Updater:
    """Each step is done, then persisted by name; run() can start at any journaled step (a resume).

    Returns the final record (``committed``, ``rolled_back`` or ``failed``); raises UpdateError with
    reason ``transfer`` when the download ran out of retries, leaving the journal at ``downloading``.
    """

    def __init__(self, settings: UpdateSettings, journal: Journal, slots: Slots, core: ModelCorePort,
                 report: Reporter, progress: ProgressHook, pause: PauseHook,
                 engine_factory: Callable[[Path], Engine] = create_engine,
                 before_install: InstallHook | None = None) -> None:
        self.settings = settings
        self._before_install = before_install
        self._engine_factory = engine_factory
        self.journal = journal
        self.slots = slots
        self.core = core
        self._report = report
        self._progress = progress
        self._pause = pause
        self.step: Step | None = None

    async def run(self, manifest: ReleaseManifest, record: UpdateRecord, send: SendPull, receive: Receive,
                  gate: Gate) -> UpdateRecord:
        self.step = record.step
        files = ReleaseFiles(self.slots.slot_dir(record.slot), manifest.artifacts, record.chunk_size,
                             record.payload_sha256)
        resumed = record.step != "verified"
        if record.step == "verified":
            await self._pause("downloading")
            record = self._advance(record, "downloading")
        if record.step == "downloading":
            self.slots.prepare(record.slot, keep=files.top_level_keep())  # leftovers of older releases go
            files.prepare()
            mismatch = await self._download(files, record, send, receive, gate)
            if mismatch is not None:
                if mismatch.reason == "hash" and record.hash_failures + 1 < MAX_HASH_ATTEMPTS:
                    # One forged but self-consistent chunk must not end the release for good: download
                    # the file that did not match again, from nothing, after the retry delay.
                    record = record.model_copy(update={"hash_failures": record.hash_failures + 1})
                    self._advance(record, "downloading", "hash", f"{mismatch}"[:300])
                    raise UpdateError("hash", f"download {record.hash_failures} of {MAX_HASH_ATTEMPTS} did not "
                                              "match the signed SHA-256; discarded, downloading again") from None
                files.discard()
                return self._fail(record, mismatch)
            await self._pause("downloaded")
            record = self._advance(record, "downloaded")
            resumed = False
        if record.step in ("downloaded", "staged") and self._before_install is not None:
            await self._before_install(record)  # the install window and install_when (the journal keeps the step)
        if record.step == "downloaded":
            self._report("installing", record)
            try:
                await asyncio.to_thread(files.install, resumed)
            except UpdateError as exc:
                files.discard()
                return self._fail(record, exc)
            await self._pause("staged")
            record = self._advance(record, "staged")
        if record.step == "staged":
            return await self._switch(manifest, record)
        return record

    def _advance(self, record: UpdateRecord, step: Step, reason: str | None = None,
                 detail: str | None = None) -> UpdateRecord:
        record = record.at(step, reason, detail)
        self.journal.record(record)
        self.step = step
        return record

    async def _download(self, files: ReleaseFiles, record: UpdateRecord, send: SendPull, receive: Receive,
                        gate: Gate) -> UpdateError | None:
        """Pull each file, then hash it against the manifest; the first file that does not match is discarded
        and returned (the others stay for the next attempt). Raises UpdateError("transfer") as the pull loop does."""
        total = record.artifact.size  # the slot entry: all the files together
        before = 0
        for partial in files.parts:
            await asyncio.to_thread(partial.open)
            self._progress(record, before + partial.bytes_done, total, None)
            transfer = ChunkTransfer(partial, record.channel, record.version, self.settings, send, gate,
                                     self._progress_from(record, before, total))
            try:
                await transfer.run(receive)
            finally:
                partial.close()
            self._report("verifying", record, detail=f"checking {partial.artifact.name}"[:300])
            try:
                await asyncio.to_thread(partial.verify)
            except UpdateError as exc:
                partial.discard()
                return exc
            before += partial.artifact.size
        return None

    def _progress_from(self, record: UpdateRecord, before: int, total: int) -> Progress:
        """Progress of one file as progress of the whole release: the files before it count as done."""
        def progress(done: int, _size: int, paused: str | None) -> None:
            self._progress(record, before + done, total, paused)
        return progress

    async def _switch(self, manifest: ReleaseManifest, record: UpdateRecord) -> UpdateRecord:
        artifact = record.artifact
        pointer = SlotPointer(slot=record.slot, model=artifact.name, size=artifact.size, sha256=artifact.sha256,
                              channel=record.channel, version=record.version)
        if not self.slots.usable(pointer):
            return self._fail(record, UpdateError("state", "the staged model is missing or has the wrong size"))
        self._report("installing", record, detail="switching to the new model")
        self.slots.write_pointer(pointer)
        await self._pause("switched")
        record = self._advance(record, "switched")
        try:
            failure = await self._health_check(manifest, record, self.slots.model_path(pointer))
        except Exception as exc:  # whatever broke, the new model is not proven: go back
            logger.exception("health check raised")
            failure = ("error", f"{type(exc).__name__}: {exc}"[:300])
        if failure is not None:
            return await self._roll_back(record, *failure)
        await self._pause("committed")
        record = self._advance(record, "committed")
        self._report("active", record)
        return record

    async def _health_check(self, manifest: ReleaseManifest, record: UpdateRecord,
                            model: Path) -> tuple[str, str] | None:
        """Swap the new model in and ask it the test prompt; (reason, detail) on failure."""
        check = manifest.health_check
        timeout_s = check.timeout_s if check else self.settings.health_timeout_s
        prompt = check.prompt if check else self.settings.health_prompt
        started = time.monotonic()
        self._report("installing", record, detail="health check")
        try:
            await self.core.swap_engine(self._engine_factory(model))
        except EngineError as exc:
            return "load", str(exc)[:300]
        await self._pause("health_check")  # the new model is loaded and on trial
        request = ChatRequest(messages=[ChatMessage(role="user", content=prompt)],
                              max_tokens=check.max_tokens if check else 16, priority="interactive")
        while True:
            left_ms = int((started + timeout_s - time.monotonic()) * 1000)
            if left_ms <= 0:
                return "timeout", f"no answer within {timeout_s} s"
            try:
                job = self.core.submit(request.model_copy(update={"deadline_ms": left_ms}),
                                            transport="update", peer="health-check")
                break
            except Busy:
                await asyncio.sleep(BUSY_RETRY_S)
            except RequestError as exc:
                return "error", str(exc)[:300]
        async for event in job.stream():
            if isinstance(event, ErrorEvent):
                reason = "timeout" if event.code == "deadline_exceeded" else "error"
                return reason, f"{event.code}: {event.message}"[:300]
            if isinstance(event, FinalEvent):
                if (check is None or check.expect_nonempty) and not event.text.strip():
                    return "empty", "the model gave an empty answer"
                logger.info("health check passed", seconds=round(time.monotonic() - started, 2),
                            tokens=event.usage.completion_tokens)
                return None
        return "error", "the answer ended without a final event"

    async def _roll_back(self, record: UpdateRecord, reason: str, detail: str) -> UpdateRecord:
        logger.warning("health check failed", channel=record.channel, version=record.version, reason=reason,
                       detail=detail)
        self.slots.write_pointer(record.previous)
        record = self._advance(record, "rolled_back", reason, detail)
        try:
            await self.core.swap_engine(self._engine_factory(Path(record.previous_model)))
        except EngineError as exc:
            logger.error("previous model failed to load", model=record.previous_model, error=str(exc))
        self._report("rolled_back", record, reason=reason, detail=detail)
        return record

    def _fail(self, record: UpdateRecord, exc: UpdateError) -> UpdateRecord:
        detail = str(exc)[:300]
        record = self._advance(record, "failed", exc.reason, detail)
        self._report("failed", record, reason=exc.reason, detail=detail)
        return record
