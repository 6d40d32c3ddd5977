"""One update from its last journaled step to the end: download, stage, switch, health check, commit or roll back."""

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
from edged.fleet.device.partial import PartialDownload, verify_file
from edged.fleet.settings import UpdateSettings
from edged.fleet.device.slots import Slots
from edged.fleet.device.transfer import ChunkTransfer, Gate, Receive, SendPull
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
        partial = PartialDownload(self.slots.slot_dir(record.slot), record.artifact, record.chunk_size,
                                  record.payload_sha256)
        resumed = record.step != "verified"
        if record.step == "verified":
            await self._pause("downloading")
            record = self._advance(record, "downloading")
        if record.step == "downloading":
            self.slots.prepare(record.slot, keep=partial.work_files)  # leftovers of older releases go
            await self._download(partial, record, send, receive, gate)
            self._report("verifying", record)
            try:
                await asyncio.to_thread(partial.verify)
            except UpdateError as exc:
                partial.discard()
                if exc.reason == "hash" and record.hash_failures + 1 < MAX_HASH_ATTEMPTS:
                    # One forged but self-consistent chunk must not end the release for good: start
                    # this download again from nothing after the retry delay.
                    record = record.model_copy(update={"hash_failures": record.hash_failures + 1})
                    self._advance(record, "downloading", "hash", f"{exc}"[:300])
                    raise UpdateError("hash", f"download {record.hash_failures} of {MAX_HASH_ATTEMPTS} did not "
                                              "match the signed SHA-256; discarded, downloading again") from None
                return self._fail(record, exc)
            await self._pause("downloaded")
            record = self._advance(record, "downloaded")
            resumed = False
        if record.step in ("downloaded", "staged") and self._before_install is not None:
            await self._before_install(record)  # the install window and install_when (the journal keeps the step)
        if record.step == "downloaded":
            self._report("installing", record)
            try:
                await self._stage(partial, record, verify=resumed)
            except UpdateError as exc:
                partial.discard()
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

    async def _download(self, partial: PartialDownload, record: UpdateRecord, send: SendPull, receive: Receive,
                        gate: Gate) -> None:
        await asyncio.to_thread(partial.open)
        self._progress(record, partial.bytes_done, record.artifact.size, None)
        transfer = ChunkTransfer(partial, record.channel, record.version, self.settings, send, gate,
                                 lambda done, total, paused: self._progress(record, done, total, paused))
        try:
            await transfer.run(receive)
        finally:
            partial.close()

    async def _stage(self, partial: PartialDownload, record: UpdateRecord, verify: bool) -> None:
        """Give the verified file its final name in the slot; after a restart, check it again first."""
        final = self.slots.slot_dir(record.slot) / record.artifact.name
        if partial.partial_path.exists():
            if verify:
                await asyncio.to_thread(partial.verify)
            partial.install()
        elif not final.is_file():
            raise UpdateError("state", f"{final} is missing after the download")
        elif verify:
            # Killed between the rename and the journal write: the file was verified before the rename.
            await asyncio.to_thread(verify_file, final, record.artifact)

    async def _switch(self, manifest: ReleaseManifest, record: UpdateRecord) -> UpdateRecord:
        artifact = record.artifact
        pointer = SlotPointer(slot=record.slot, model=artifact.name, size=artifact.size, sha256=artifact.sha256,
                              channel=record.channel, version=record.version)
        if not self.slots.usable(pointer):
            return self._fail(record, UpdateError("state", "the staged model file is missing or has the wrong size"))
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
